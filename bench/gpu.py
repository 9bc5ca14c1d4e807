"""Full-size GPU benchmark: DreamRelation vs a plain LoRA step, sampling and the VAE at 480x848.

Needs no weights: the full-size `MochiTransformer3DModel` (48 blocks, 3072 wide) and
`AutoencoderKLMochi` are built from their default configs, randomly initialised directly in
bfloat16 on the GPU. One table (markdown, for docs/performance.md), then the last line
`dreamrelation/plain step ratio at 61x480x848: R`. Under 8 minutes on one 80-140 GB GPU:
rows that would start after `--budget-s` are reported as skipped.

Rows:
- training steps with gradient checkpointing, one shared bf16 base model carrying both
  variants' adapters (fp32), built by the training code itself (`train.init_state`,
  `train.train_step` through `bench/train_step.py`'s `Bench`):
  DreamRelation = LoRA triplet + HMT + RCL, the mean of one step of each HMT option (the
  expected step time under the uniform choice, METHOD.md §3); plain = one LoRA on Q, K, V, out
  with the plain loss (METHOD.md §6 baseline). At 61x480x848 (latent 12x11x60x106) and
  25x480x848, plus one deterministic DreamRelation step at 25x480x848 (`train.deterministic`);
- sampling: one classifier-free-guidance transformer call (cond + uncond as a batch of 2, as
  `MochiPipeline` does) with relation + FFN LoRAs at 61x480x848, times 64 steps;
- the VAE: encode of one 61x480x848 clip untiled and tiled, decode of its latent tiled;
- Wan 2.1 (issue 23), full-size `WanTransformer3DModel` 1.3B and 14B (bf16, random): a
  DreamRelation and a plain training step at 81x480x832 (latent 16x21x60x104, 512 zero-padded
  text tokens: UMT5 precomputed, never loaded), their peaks and ratio. Targets: 1.3B peak
  <= 16 GB, 14B <= 80 GB, ratio <= 1.10; the estimate they are checked against is in
  docs/performance.md.
Peak memory is `torch.cuda.max_memory_allocated` over the row (weights included).

    python bench/gpu.py [--budget-s 420]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: the deterministic row needs it

import torch
from diffusers import AutoencoderKLMochi, AutoencoderKLWan, MochiTransformer3DModel, WanTransformer3DModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import VARIANTS, Bench

from dreamrelation.data.masks import latent_shape
from dreamrelation.data.video import VideoConfig
from dreamrelation.model import lora
from dreamrelation.model.lora import GROUPS
from dreamrelation.model.family import LatentNorm
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.wan import FULL_SIZE, WAN

#: Clip sizes (frames x height x width) of the training rows; the first is the paper's.
SIZES = {"61x480x848": VideoConfig(num_frames=61), "25x480x848": VideoConfig(num_frames=25)}
MAIN = "61x480x848"
#: Wan 2.1's training clip: WanPipeline's default 81 frames at 480x832 (latent 16x21x60x104).
WAN_VIDEO = VideoConfig(num_frames=81, height=480, width=832, aspect=832 / 480, temporal_compression=4)
WAN_SIZE = "81x480x832"
WAN_TARGET_GIB = {"1.3B": 16.0, "14B": 80.0}
PLAIN_STEPS = 3  # timed plain steps per size (the DreamRelation rows time one step per HMT option)
SAMPLING_STEPS = 64  # METHOD.md §5
TEXT_TOKENS = 256  # T5 features per prompt (12 of them real in the bench inputs)
GIB = 2**30


@dataclass
class Row:
    """One line of the table; `seconds` None = not measured (see `note`)."""

    what: str
    seconds: float | None = None
    peak_gib: float | None = None
    note: str = ""


class Meter:
    """Wall time and peak allocated memory of a piece of work (memory on CUDA only)."""

    def __init__(self, device: torch.device, budget_s: float):
        self.device = device
        self.deadline = time.monotonic() + budget_s

    def in_budget(self) -> bool:
        return time.monotonic() < self.deadline

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GIB if self.device.type == "cuda" else None

    def time(self, work: Callable[[], Any]) -> float:
        self.sync()
        start = time.perf_counter()
        work()
        self.sync()
        return time.perf_counter() - start


# --------------------------------------------------------------------------- models


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def full_size_transformer(device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> MochiTransformer3DModel:
    """The default (full-size) Mochi DiT, randomly initialised in `dtype` directly on `device`."""
    with torch.device(device), default_dtype(dtype):
        model = MochiTransformer3DModel()
    if torch.device(device).type != "meta":
        with torch.no_grad():  # real weights overwrite the zeros; random ones give positions
            model.pos_frequencies.normal_(0.0, 0.25)
    return model


def full_size_vae(device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> AutoencoderKLMochi:
    """The default (full-size) Mochi VAE, randomly initialised in `dtype` directly on `device`."""
    with torch.device(device), default_dtype(dtype):
        return AutoencoderKLMochi().eval()


def full_size_wan(size: str, device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> WanTransformer3DModel:
    """The published Wan2.1-T2V `size` DiT ("1.3B" or "14B"), randomly initialised in `dtype` on `device`."""
    with torch.device(device), default_dtype(dtype):
        return WanTransformer3DModel(**FULL_SIZE[size])


def latent(video: VideoConfig, channels: int = 12) -> tuple[int, int, int, int]:
    """(C, f, h, w) of a clip of `video` size."""
    return (channels, *latent_shape(video))


def training_benches(
    transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype, vae_norm: Any, video: VideoConfig,
    channels: int = 12,
) -> dict[str, Bench]:
    """DreamRelation ("full") and plain states with gradient checkpointing on one shared base model."""
    return {
        variant: Bench.on_transformer(variant, transformer, device, dtype, True, vae_norm, latent(video, channels))
        for variant in VARIANTS
    }


def plan_wan(size: str, device: str | torch.device = "meta") -> dict[str, Any]:
    """The Wan setup without running it: trainable parameters per adapter, base parameters, tokens."""
    transformer = full_size_wan(size, device)
    training_benches(transformer, torch.device(device), torch.bfloat16, LatentNorm(None, None), WAN_VIDEO,
                     WAN.latent_channels)
    params = {row["adapter"]: row["params"] for row in lora.trainable_parameter_table(transformer)}
    base = sum(p.numel() for n, p in transformer.named_parameters() if lora.adapter_of(n) is None)
    _, f, h, w = latent(WAN_VIDEO, WAN.latent_channels)
    return {"params": params, "base_params": base, "latent": latent(WAN_VIDEO, WAN.latent_channels),
            "vision_tokens": f * (h // 2) * (w // 2), "text_tokens": WAN.max_text_length, "transformer": transformer}


def plan(device: str | torch.device = "meta") -> dict[str, Any]:
    """The setup without running it: trainable parameters per adapter, base parameters, and per
    size the latent shape and the transformer's vision tokens (patch 2) plus text tokens."""
    device = torch.device(device)
    transformer = full_size_transformer(device)
    training_benches(transformer, device, torch.bfloat16, LatentNorm(None, None), SIZES[MAIN])
    params = {row["adapter"]: row["params"] for row in lora.trainable_parameter_table(transformer)}
    base = sum(p.numel() for n, p in transformer.named_parameters() if lora.adapter_of(n) is None)
    sizes = {}
    for name, video in SIZES.items():
        _, f, h, w = latent(video)
        sizes[name] = {"latent": latent(video), "vision_tokens": f * (h // 2) * (w // 2), "text_tokens": TEXT_TOKENS}
    return {"params": params, "base_params": base, "sizes": sizes, "transformer": transformer}


# --------------------------------------------------------------------------- measurements


def _peak_steps(bench: Bench, meter: Meter, groups: list[str | None]) -> tuple[list[float], float | None]:
    """One warm-up step, then one timed step per entry of `groups`; their seconds and the peak memory."""
    bench.reactivate()
    bench.step(groups[0])
    meter.reset_peak()
    seconds = [bench.step(group) for group in groups]
    return seconds, meter.peak_gib()


def measure_training(benches: dict[str, Bench], size: str, video: VideoConfig, meter: Meter,
                     deterministic: bool = False, channels: int = 12, target: str = "") -> list[Row]:
    """DreamRelation and plain step rows at one size, and their ratio (or one deterministic row)."""
    full, plain = benches["full"], benches["plain"]
    for bench in (full, plain):
        bench.use_shape(latent(video, channels))
    if deterministic:
        full.cfg = full.cfg.model_copy(update={"deterministic": True})
        try:
            seconds, peak = _peak_steps(full, meter, list(GROUPS))
        finally:
            full.cfg = full.cfg.model_copy(update={"deterministic": False})
        return [Row(f"DreamRelation step {size}, deterministic", statistics.mean(seconds), peak,
                    "train.deterministic = true")]
    full_s, full_peak = _peak_steps(full, meter, list(GROUPS))
    plain_s, plain_peak = _peak_steps(plain, meter, [None] * PLAIN_STEPS)
    per_group = " / ".join(f"{g} {s:.2f}" for g, s in zip(GROUPS, full_s))
    ratio = statistics.mean(full_s) / statistics.mean(plain_s)
    return [
        Row(f"DreamRelation step {size} (HMT + RCL)", statistics.mean(full_s), full_peak,
            f"s per option: {per_group}{target}"),
        Row(f"plain single-LoRA step {size}", statistics.mean(plain_s), plain_peak, f"mean of {PLAIN_STEPS}"),
        Row(f"ratio dreamrelation/plain {size}", ratio, None, "target <= 1.10"),
    ]


def measure_sampling(transformer: torch.nn.Module, video: VideoConfig, meter: Meter, steps: int = SAMPLING_STEPS,
                     repeats: int = 2) -> Row:
    """One CFG call (batch of 2) with the inference adapters, times `steps`."""
    device, dtype = meter.device, next(transformer.parameters()).dtype
    lora.activate_adapters(transformer, [a for a in ("relation", "ffn") if a in transformer.peft_config])
    transformer.eval()
    g = torch.Generator().manual_seed(0)
    text_dim = transformer.config.text_embed_dim
    inputs = {
        "hidden_states": torch.randn(2, *latent(video), generator=g).to(device, dtype),
        "encoder_hidden_states": torch.randn(2, TEXT_TOKENS, text_dim, generator=g).to(device, dtype),
        "timestep": torch.full((2,), 500.0, device=device),
        "encoder_attention_mask": (torch.arange(TEXT_TOKENS) < 12).expand(2, -1).to(device),
        "return_dict": False,
    }
    with torch.no_grad():
        meter.time(lambda: transformer(**inputs))  # warm-up
        meter.reset_peak()
        seconds = statistics.mean(meter.time(lambda: transformer(**inputs)) for _ in range(repeats))
    transformer.train()
    return Row(f"sampling {steps} steps {MAIN}, estimate", seconds * steps, meter.peak_gib(),
               f"{seconds:.2f} s per CFG call (cond + uncond batch) x {steps}")


def measure_vae(vae: AutoencoderKLMochi, video: VideoConfig, meter: Meter, size: str = MAIN) -> list[Row]:
    """Encode one clip untiled and tiled, decode its latent tiled; out-of-memory is a result, not a crash."""
    device, dtype = meter.device, next(vae.parameters()).dtype
    clip = (torch.rand(1, 3, video.num_frames, video.height, video.width, generator=torch.Generator().manual_seed(0))
            * 2 - 1).to(device, dtype)
    rows: list[Row] = []
    latents: dict[str, torch.Tensor] = {}

    def run(what: str, tiled: bool, work: Callable[[], Any]) -> None:
        if not meter.in_budget():
            rows.append(Row(what, note="skipped: time budget"))
            return
        if tiled:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        meter.reset_peak()
        with torch.no_grad():
            row = guarded(what, meter, lambda: [Row(what, meter.time(work), meter.peak_gib())])
        rows.extend(row)

    run(f"VAE encode {size}, tiled", True, lambda: latents.setdefault("z", MOCHI.encode_video(vae, clip)[0]))
    if "z" in latents:
        run(f"VAE decode {size}, tiled", True, lambda: vae.decode(latents["z"]).sample)
    run(f"VAE encode {size}, untiled", False, lambda: MOCHI.encode_video(vae, clip))
    return rows


def guarded(what: str, meter: Meter, work: Callable[[], list[Row]]) -> list[Row]:
    """The rows of `work`, or one row saying why it failed (out of memory is a result, not a crash)."""
    try:
        return work()
    except (RuntimeError, FloatingPointError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        return [Row(what, None, meter.peak_gib(), f"failed: {type(exc).__name__}: {reason}")]
    finally:
        gc.collect()
        if meter.device.type == "cuda":
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- the table


def format_table(rows: list[Row], header: str) -> str:
    lines = [header, "", "| measurement | seconds | peak GiB | note |", "|---|---:|---:|---|"]
    for row in rows:
        seconds = "-" if row.seconds is None else f"{row.seconds:.3f}" if "ratio" in row.what else f"{row.seconds:.2f}"
        peak = "-" if row.peak_gib is None else f"{row.peak_gib:.1f}"
        lines.append(f"| {row.what} | {seconds} | {peak} | {row.note} |")
    return "\n".join(lines)


def transformer_rows(device: torch.device, dtype: torch.dtype, meter: Meter) -> tuple[list[Row], float | None]:
    """Training and sampling rows on one full-size transformer; returns them and the main ratio."""
    transformer = full_size_transformer(device, dtype)
    with torch.device("meta"):
        vae_norm = AutoencoderKLMochi().config
    benches = training_benches(transformer, device, dtype, vae_norm, SIZES[MAIN])
    small = "25x480x848"
    work = [(f"training steps {size}", lambda s=size: measure_training(benches, s, SIZES[s], meter)) for size in SIZES]
    work += [
        (f"deterministic step {small}",
         lambda: measure_training(benches, small, SIZES[small], meter, deterministic=True)),
        (f"sampling {MAIN}", lambda: [measure_sampling(transformer, SIZES[MAIN], meter)]),
    ]
    rows: list[Row] = []
    ratio = None
    for what, measure in work:
        if not meter.in_budget():
            rows.append(Row(what, note="skipped: time budget"))
            continue
        measured = guarded(what, meter, measure)
        if what == f"training steps {MAIN}" and measured[-1].what.startswith("ratio"):
            ratio = measured[-1].seconds
        rows += measured
    return rows, ratio


def wan_rows(size: str, device: torch.device, meter: Meter, dtype: torch.dtype = torch.bfloat16) -> list[Row]:
    """DreamRelation and plain training steps on the full-size Wan `size` at 81x480x832."""
    what = f"Wan2.1-T2V-{size} training steps {WAN_SIZE}"
    if not meter.in_budget():
        return [Row(what, note="skipped: time budget")]

    def measure() -> list[Row]:
        transformer = full_size_wan(size, device, dtype)
        with torch.device("meta"):
            vae_norm = AutoencoderKLWan().config
        benches = training_benches(transformer, device, dtype, vae_norm, WAN_VIDEO, WAN.latent_channels)
        rows = measure_training(benches, f"Wan {size} {WAN_SIZE}", WAN_VIDEO, meter, channels=WAN.latent_channels,
                                target=f"; peak target <= {WAN_TARGET_GIB[size]:.0f} GB")
        del benches, transformer
        return rows

    return guarded(what, meter, measure)


def run_all(device: torch.device, budget_s: float) -> tuple[list[Row], float | None]:
    """Every row, in order of importance; returns the rows and the main ratio."""
    meter = Meter(device, budget_s)
    rows, ratio = transformer_rows(device, torch.bfloat16, meter)
    gc.collect()  # the transformer is gone: room for the VAE
    torch.cuda.empty_cache()
    rows += measure_vae(full_size_vae(device, torch.bfloat16), SIZES[MAIN], meter)
    for size in FULL_SIZE:
        gc.collect()
        torch.cuda.empty_cache()
        rows += wan_rows(size, device, meter)
    return rows, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new row after this many seconds")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device, nothing measured (needs one 80-140 GB GPU)")
        return
    device = torch.device("cuda")
    start = time.perf_counter()
    rows, ratio = run_all(device, args.budget_s)
    name = torch.cuda.get_device_name(device)
    header = (f"{name}, torch {torch.__version__}, bf16 base + fp32 LoRA (rank 16), gradient checkpointing, "
              f"random full-size weights; {time.perf_counter() - start:.0f} s in all")
    print(format_table(rows, header))
    print(f"dreamrelation/plain step ratio at {MAIN}: {'-' if ratio is None else f'{ratio:.3f}'}")


if __name__ == "__main__":
    main()
