"""Step time and peak memory of the DreamRelation objective vs a plain single-LoRA step.

Both variants run `dreamrelation.model.train.train_step` on the same tiny DiT of the chosen
family (`--family mochi|wan`) and the same inputs (demo-sized latents, 25 frames at 96x160 ->
12 x 5 x 12 x 20 on Mochi, 16 x 7 x 12 x 20 on Wan):

- full:  relation / subject1 / subject2 / FFN LoRAs, hybrid mask training, contrastive loss
- plain: one LoRA on Q, K, V and out ("direct" baseline), plain flow-matching loss

Step times are measured interleaved (full, plain, full, ...) so load changes on a shared
machine hit both alike; peak memory is measured per variant in a fresh subprocess
(GPU: torch.cuda.max_memory_allocated; CPU: peak RSS). The last line is the time ratio;
the target is <= 1.10.

    python bench/train_step.py [--family mochi|wan] [--steps 40] [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dreamrelation.model.config import BaseModelConfig, LoraTripletConfig, TrainConfig
from dreamrelation.model.families import FAMILIES, family_of_model
from dreamrelation.model.family import ModelFamily
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.train import (
    TrainClip,
    TrainState,
    build_state,
    init_state,
    train_step,
)

LATENT_SHAPE = (12, 5, 12, 20)  # (C, f, h, w) of a 25-frame 96x160 clip on Mochi
#: The same clip on each family: latent channels and T_c differ (METHOD.md §1, §9).
DEMO_LATENTS = {"mochi": LATENT_SHAPE, "wan": (16, 7, 12, 20)}
VARIANTS = ("full", "plain")


def make_config(variant: str, gradient_checkpointing: bool) -> TrainConfig:
    mode = "triplet" if variant == "full" else "direct"
    return TrainConfig(
        steps=10_000,
        warmup_steps=0,
        gradient_checkpointing=gradient_checkpointing,
        hmt=variant == "full",
        rcl=variant == "full",
        lora=LoraTripletConfig(rank=16, alpha=16, mode=mode),
    )


def make_inputs(
    text_dim: int, clips: int = 4, shape: tuple[int, int, int, int] = LATENT_SHAPE, tokens: int = 256
) -> tuple[list[TrainClip], tuple[torch.Tensor, torch.Tensor]]:
    """Random clips of latent `shape` (C, f, h, w) with 12-token captions among `tokens`, and the empty prompt."""
    c, f, h, w = shape
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(tokens) < 12
    data = []
    for i in range(clips):
        s1, s2 = (torch.rand(2, f, h, w, generator=g) > 0.6).float()
        data.append(
            TrainClip(
                clip_id=f"clip{i}",
                latent_mean=torch.randn(c, f, h, w, generator=g),
                latent_logvar=torch.zeros(c, f, h, w),
                text_embeds=torch.randn(tokens, text_dim, generator=g) * mask[:, None],  # zero padding, as on Wan
                text_mask=mask,
                latent_masks=torch.stack([s1, s2, torch.maximum(s1, s2)], dim=1),
            )
        )
    empty = (torch.randn(tokens, text_dim, generator=g) * (torch.arange(tokens) < 1)[:, None], torch.arange(tokens) < 1)
    return data, empty


class Bench:
    """One variant's training state and inputs (the base model may be shared with another Bench)."""

    def __init__(
        self, cfg: TrainConfig, state: TrainState, vae_norm: Any, shape: tuple[int, int, int, int] = LATENT_SHAPE
    ):
        self.cfg = cfg
        self.state = state
        self.vae_norm = vae_norm
        self.device = state.device
        self.clips, self.empty = self._inputs(shape)

    def _inputs(self, shape: tuple[int, int, int, int]) -> tuple[list[TrainClip], tuple[torch.Tensor, torch.Tensor]]:
        """Inputs in the family's text format: Mochi's T5 width and 256 tokens, Wan's UMT5 width and 512."""
        config = self.state.transformer.config
        width = config.get("text_embed_dim") or config["text_dim"]
        return make_inputs(width, shape=shape, tokens=family_of_model(self.state.transformer).max_text_length)

    @classmethod
    def from_model_dir(cls, variant: str, model_dir: Path, device: torch.device, dtype: torch.dtype,
                       ckpt: bool, family: ModelFamily = MOCHI) -> Bench:
        """A variant on its own copy of the `family` base model in `model_dir`."""
        cfg = make_config(variant, ckpt)
        return cls(cfg, build_state(cfg, family, model_dir, device, dtype), family.load_vae(model_dir).config,
                   DEMO_LATENTS[family.name])

    @classmethod
    def on_transformer(cls, variant: str, transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                       ckpt: bool, vae_norm: Any, shape: tuple[int, int, int, int]) -> Bench:
        """A variant whose adapters are added to `transformer` (shared: call `reactivate` when switching)."""
        cfg = make_config(variant, ckpt)
        return cls(cfg, init_state(cfg, transformer, device, dtype), vae_norm, shape)

    def use_shape(self, shape: tuple[int, int, int, int]) -> None:
        """Train on fresh random clips of latent `shape` from now on (and a fresh positive bank,
        whose (f - 1, C) entries depend on the number of latent frames)."""
        self.clips, self.empty = self._inputs(shape)
        self.state.pos_bank.items.clear()

    def reactivate(self) -> None:
        """Activate this variant's adapters on the next step (another variant may have changed them)."""
        self.state.active = ()

    def step(self, group: str | None = None) -> float:
        """Seconds of one optimizer step (with the HMT option `group` when given)."""
        groups = self.state.groups
        if group is not None:
            self.state.groups = [group]
        try:
            self._sync()
            start = time.perf_counter()
            train_step(self.state, self.clips, self.empty, self.vae_norm, self.cfg)
            self._sync()
        finally:
            self.state.groups = groups
        return time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def peak_memory(variant: str, args: argparse.Namespace) -> dict:
    """Run `--measure-memory VARIANT` in a fresh process and read its JSON line."""
    cmd = [sys.executable, __file__, "--measure-memory", variant, "--family", args.family, "--device", args.device,
           "--threads", str(args.threads), "--steps", str(min(args.steps, 10)), "--models", args.models]
    cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure_memory(variant: str, model_dir: Path, device: torch.device, dtype: torch.dtype, args) -> None:
    bench = Bench.from_model_dir(variant, model_dir, device, dtype, args.gradient_checkpointing, FAMILIES[args.family])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = 0 if device.type == "cuda" else _rss_bytes()
    for _ in range(args.steps):
        bench.step()
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(), "cuda max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"
    print(json.dumps({"variant": variant, "peak_bytes": peak, "growth_bytes": max(peak - before, 0), "kind": kind}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=list(FAMILIES), default="mochi", help="the tiny base model's family")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant (after 5 warmup steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (tiny models: 1 is fastest)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--models", default=str(Path(tempfile.gettempdir()) / "dreamrelation-bench-models"))
    parser.add_argument("--measure-memory", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    family = FAMILIES[args.family]
    model_dir = family.ensure_tiny(family.tiny_dir(args.models, BaseModelConfig().tiny_seed))
    if args.measure_memory:
        measure_memory(args.measure_memory, model_dir, device, dtype, args)
        return

    benches = {v: Bench.from_model_dir(v, model_dir, device, dtype, args.gradient_checkpointing, family)
               for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(args.steps + 5):
        for variant, bench in benches.items():
            seconds = bench.step()
            if i >= 5:
                times[variant].append(seconds)
    median = {v: statistics.median(t) for v, t in times.items()}
    memory = {v: peak_memory(v, args) for v in VARIANTS}

    config = benches["full"].state.transformer.config
    width = config.num_attention_heads * config.attention_head_dim
    latents = "x".join(map(str, DEMO_LATENTS[family.name]))
    print(f"device: {device} ({args.threads} thread(s), {dtype}), tiny {family.title} DiT: {config.num_layers} blocks, "
          f"width {width}, latents {latents}, rank 16, {args.steps} timed steps")
    labels = {"full": "full (triplet + HMT + RCL)", "plain": "plain (single LoRA, plain loss)"}
    for variant in VARIANTS:
        mib, growth = memory[variant]["peak_bytes"] / 2**20, memory[variant]["growth_bytes"] / 2**20
        print(f"{labels[variant]:<34} median step {median[variant] * 1e3:7.2f} ms   "
              f"peak memory {mib:8.1f} MiB ({memory[variant]['kind']}; +{growth:.1f} MiB during the steps)")
    print(f"ratio full/plain (median step time): {median['full'] / median['plain']:.3f}")


if __name__ == "__main__":
    main()
