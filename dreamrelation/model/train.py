"""The DreamRelation training loop (METHOD.md §1, §3-§5), one readable loop in plain PyTorch.

Inputs are precomputed by earlier stages: per clip the raw VAE posterior, T5 features and the
latent masks (S1, S2, R); plus the empty-prompt features for caption dropout and the VAE's
latent normalization. Each step:

1. draw (from a generator seeded by (seed, step), so a resumed run draws the same) a clip, an
   HMT group (METHOD.md §3), caption dropout, the noise level s ~ U(0, 1) and the noise eps;
2. activate exactly the group's adapters (idle adapters get no gradient and no optimizer
   update: no momentum, no weight decay; they stay bit-identical);
3. x_s = (1 - s) z0 + s eps, and the base family's timestep and target: on Mochi t = 1000 (1 - s),
   v = z0 - eps (METHOD.md §1); on Wan t = 1000 s, v = eps - z0 (§9);
4. L = L_rec (mask-weighted, §3) + lambda_1 L_RCL (§4; on every step, or with
   `rcl_branches="relation"` only on relation-branch steps, which alone then feed the banks);
   AdamW, warmup + cosine.

Checkpoints hold the adapters, optimizer, LR schedule, both memory banks (restored onto the
training device), RNG states and the step. What "N steps + resume N steps equals 2N steps"
means exactly:
- CPU: bit-identical weights, banks and logs (all CPU kernels used here are deterministic).
- CUDA with `train.deterministic`: bit-identical on the same GPU model with the same torch /
  CUDA / cuDNN versions (deterministic algorithms, fixed cuBLAS workspace, no cuDNN attention,
  deterministic flash / memory-efficient attention backward).
- CUDA without it (the default, faster): the same draws (clip, group, dropout, s, noise come
  from a CPU generator seeded by (seed, step)) and the same restored state, but the attention
  backward and some cuBLAS reductions are not bit-reproducible, so weights agree only to
  floating-point noise and can drift apart over many steps; two uninterrupted runs differ
  the same way.

Mixed precision (`numerics.py`): with bfloat16 base weights the forward runs under bfloat16
autocast, on CPU exactly as on CUDA; the LoRA weights, their gradients and the optimizer stay
float32, and the losses are computed in float32.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from dreamrelation.data.previews import format_sig
from dreamrelation.model import lora, numerics
from dreamrelation.model.config import BaseModelConfig, TrainConfig
from dreamrelation.model.families import family_of, family_of_model, resolve_model_dir
from dreamrelation.model.family import LatentNorm, ModelFamily, normalize_latents, resolve_device, resolve_dtype
from dreamrelation.model.losses import MemoryBank, masked_flow_loss, relational_contrastive_step
from dreamrelation.model.sample import TrainingSampler

log = logging.getLogger("dreamrelation.train")

#: Index of each HMT group's mask in `TrainClip.latent_masks` (S1, S2, R).
MASK_INDEX = {"subject1": 0, "subject2": 1, "relation": 2}
#: Steps that count as the relation branch for `rcl_branches="relation"` ("all" = HMT off: every adapter).
RELATION_BRANCHES = ("relation", "all")
LORA_FILE = "relation_lora.safetensors"
_CKPT_PREFIX = "step-"
_COMPLETE = "COMPLETE"


@dataclass
class TrainClip:
    """One training clip, as loaded from the latent / text / mask stores."""

    clip_id: str
    latent_mean: torch.Tensor  # (C, f, h, w) raw VAE posterior mean
    latent_logvar: torch.Tensor  # (C, f, h, w) raw VAE posterior log-variance
    text_embeds: torch.Tensor  # (L, D) text features (T5 on Mochi, UMT5 zero-padded on Wan)
    text_mask: torch.Tensor  # (L,) bool
    latent_masks: torch.Tensor  # (f, 3, h, w) in [0, 1]: S1, S2, R


@dataclass
class TrainResult:
    """What a `train` call did."""

    final_step: int
    run_dir: Path
    lora_path: Path | None  # None when stopped early (stop_at)
    checkpoint: Path | None
    loss_rec: float | None
    loss_rcl: float | None
    resumed_from: int
    parameter_table: list[dict[str, object]]  # trainable parameters per adapter (METHOD.md §2)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; nothing is saved for that step and the last checkpoint stays."""


@dataclass
class TrainState:
    """Everything a step changes, plus the fixed objects it needs."""

    transformer: torch.nn.Module
    family: ModelFamily  # the base's conventions: timestep, target, how the DiT is called
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LambdaLR
    pos_bank: MemoryBank
    neg_bank: MemoryBank
    adapters: list[str]
    groups: list[str]
    device: torch.device
    dtype: torch.dtype
    step: int = 0  # completed optimizer steps
    active: tuple[str, ...] = ()
    parameter_table: list[dict[str, object]] = field(default_factory=list)


# --------------------------------------------------------------------------- rectified flow


def add_noise(z0: torch.Tensor, eps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s) z0 + s eps, with s of shape (B,) broadcast over (B, C, f, h, w) (METHOD.md §1, §9)."""
    s = s.view(-1, *([1] * (z0.ndim - 1)))
    return (1.0 - s) * z0 + s * eps


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to 1 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one step: the draws of step k depend only on (seed, k)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# --------------------------------------------------------------------------- setup


def build_state(
    cfg: TrainConfig, family: ModelFamily, model_dir: str | Path, device: torch.device, dtype: torch.dtype
) -> TrainState:
    """Load the base transformer of `family`, add the LoRAs, and make the optimizer, schedule and banks."""
    return init_state(cfg, family.load_transformer(model_dir, dtype=dtype, device=device), device, dtype)


def init_state(
    cfg: TrainConfig, transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype
) -> TrainState:
    """The training state around a base `transformer` (already in `dtype`): freeze it, add the
    LoRAs (float32), and make the optimizer, schedule and the memory banks on `device`. The family's
    conventions follow from the transformer's class."""
    transformer.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # LoRA A matrices: same seed, same initial weights
        torch.manual_seed(cfg.seed)
        adapters = lora.add_relation_loras(transformer, cfg.lora)
    transformer.to(device)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    table = lora.trainable_parameter_table(transformer)
    params = list(lora.lora_parameters(transformer).values())  # sorted names: a stable order
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps)
    )
    return TrainState(
        transformer=transformer,
        family=family_of_model(transformer),
        optimizer=optimizer,
        lr_scheduler=schedule,
        pos_bank=MemoryBank(cfg.pos_bank_size, device),
        neg_bank=MemoryBank(cfg.neg_bank_size, device),
        adapters=adapters,
        groups=lora.available_groups(cfg.lora) if cfg.hmt else ["all"],
        device=device,
        dtype=dtype,
        parameter_table=table,
    )


def _check_clips(clips: Sequence[TrainClip], cfg: TrainConfig) -> None:
    if not clips:
        raise ValueError("no training clips")
    for clip in clips:
        c, f, h, w = clip.latent_mean.shape
        if tuple(clip.latent_masks.shape) != (f, 3, h, w):
            raise ValueError(
                f"clip {clip.clip_id}: latent_masks {tuple(clip.latent_masks.shape)} do not match "
                f"latents {tuple(clip.latent_mean.shape)} (expected {(f, 3, h, w)})"
            )
        if clip.text_embeds.ndim != 2 or clip.text_mask.shape != clip.text_embeds.shape[:1]:
            raise ValueError(f"clip {clip.clip_id}: text_embeds (L, D) and text_mask (L,) expected")
    if cfg.rcl and len({clip.latent_mean.shape[1] for clip in clips}) > 1:
        raise ValueError("the contrastive loss needs all clips to have the same number of latent frames")


# --------------------------------------------------------------------------- one step


def train_step(
    state: TrainState,
    clips: Sequence[TrainClip],
    empty_text: tuple[torch.Tensor, torch.Tensor],
    vae_norm: Any,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """One optimizer step; returns its log record. Raises NonFiniteLossError before updating."""
    step = state.step + 1
    g = step_generator(cfg.seed, step)
    device = state.device
    direct = cfg.lora.mode == "direct"

    # 1. draws: clip, HMT group, caption dropout, noise level, noise
    clip = clips[int(torch.randint(len(clips), (1,), generator=g))]
    group = state.groups[int(torch.randint(len(state.groups), (1,), generator=g))]
    drop_caption = bool(torch.rand((), generator=g) < cfg.caption_dropout)
    s = torch.rand((1,), generator=g)
    eps = torch.randn((1, *clip.latent_mean.shape), generator=g)
    latents = clip.latent_mean.float()
    if cfg.sample_posterior:
        noise = torch.randn(clip.latent_mean.shape, generator=g)
        latents = latents + torch.exp(0.5 * clip.latent_logvar.float()) * noise
    z0 = normalize_latents(latents, vae_norm).unsqueeze(0)

    # 2. adapters of this step (METHOD.md §3); "all" = HMT off
    adapters = state.adapters if group == "all" else lora.select_lora_group(group, cfg.lora)
    if tuple(adapters) != state.active:
        lora.activate_adapters(state.transformer, adapters)
        state.active = tuple(adapters)

    # 3. rectified-flow noising, in the base family's convention (METHOD.md §1, §9)
    x = add_noise(z0, eps, s).to(device, state.dtype)
    t = state.family.timestep(s).to(device)
    target = state.family.flow_target(z0, eps).to(device)
    embeds, mask = empty_text if drop_caption else (clip.text_embeds, clip.text_mask)
    embeds, mask = embeds.to(device, state.dtype).unsqueeze(0), mask.to(device).bool().unsqueeze(0)
    loss_mask = None
    if group in MASK_INDEX and not direct:
        loss_mask = clip.latent_masks[:, MASK_INDEX[group]].to(device).unsqueeze(0)

    # 4. loss (METHOD.md §3, §4); forward and backward share the numerics (numerics.py)
    with numerics.deterministic_mode(cfg.deterministic):
        with numerics.autocast(device, state.dtype):
            v_pred = state.family.predict(state.transformer, x, t, embeds, mask)
        loss_rec = masked_flow_loss(v_pred, target, loss_mask, cfg.lambda_m)
        loss_rcl = None
        if cfg.rcl and not direct and (cfg.rcl_branches == "all" or group in RELATION_BRANCHES):
            loss_rcl = relational_contrastive_step(
                v_pred[0], state.pos_bank, state.neg_bank, cfg.n_pos, cfg.n_neg, cfg.tau, g
            )
        loss = loss_rec if loss_rcl is None else loss_rec + cfg.lambda_rcl * loss_rcl
        record = {
            "step": step,
            "group": group,
            "clip": clip.clip_id,
            "caption_dropped": drop_caption,
            "s": float(s),
            "loss_rec": loss_rec.detach().item(),
            "loss_rcl": None if loss_rcl is None else loss_rcl.detach().item(),
            "lr": state.lr_scheduler.get_last_lr()[0],
        }
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (loss_rec={record['loss_rec']}, loss_rcl={record['loss_rcl']}, "
                f"clip={clip.clip_id}, group={group})"
            )
        loss.backward()

    # 5. update: only parameters with a gradient (the active adapters) are touched, unless idle
    # adapters decay as in the authors' code (METHOD.md §3): then they get a zero gradient
    if cfg.idle_adapters == "decay":
        for param in state.optimizer.param_groups[0]["params"]:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
    state.optimizer.step()
    state.lr_scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step = step
    return record


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{_CKPT_PREFIX}*") if (p / _COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_CKPT_PREFIX) :]))


def save_checkpoint(state: TrainState, run_dir: str | Path, cfg: TrainConfig) -> Path:
    """Write a complete checkpoint (temp folder + rename), then keep only the newest `keep_last`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_CKPT_PREFIX}{state.step:08d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    adapters = {name: p.detach().cpu().contiguous() for name, p in lora.lora_parameters(state.transformer).items()}
    save_file(adapters, tmp / "adapters.safetensors")
    training_state = {
        "step": state.step,
        "optimizer": state.optimizer.state_dict(),
        "lr_scheduler": state.lr_scheduler.state_dict(),
        "pos_bank": state.pos_bank.state_dict(),
        "neg_bank": state.neg_bank.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "config": cfg.model_dump_json(),
    }
    torch.save(training_state, tmp / "state.pt")
    (tmp / _COMPLETE).write_text(str(state.step))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoint_dirs(run_dir)[: -cfg.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(state: TrainState, checkpoint: str | Path, cfg: TrainConfig) -> None:
    """Restore adapters, optimizer, schedule, banks, RNG states and step from `checkpoint`.

    The state file is read onto the CPU; the optimizer moves its moments to the parameters'
    device and the memory banks move their entries to the training device (`MemoryBank`).
    """
    checkpoint = Path(checkpoint)
    saved = load_file(checkpoint / "adapters.safetensors")
    params = lora.lora_parameters(state.transformer)
    if set(saved) != set(params):
        raise ValueError(f"checkpoint {checkpoint} has different LoRA adapters than the configured model")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])
    training_state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)
    if not _same_training(training_state["config"], cfg):
        log.warning("resuming %s with a different TrainConfig than it was saved with", checkpoint)
    state.optimizer.load_state_dict(training_state["optimizer"])
    state.lr_scheduler.load_state_dict(training_state["lr_scheduler"])
    state.pos_bank.load_state_dict(training_state["pos_bank"])
    state.neg_bank.load_state_dict(training_state["neg_bank"])
    torch.set_rng_state(training_state["rng_cpu"])
    if training_state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training_state["rng_cuda"])
    state.step = int(training_state["step"])


# --------------------------------------------------------------------------- the loop


def _same_training(saved: str, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's TrainConfig (JSON) trains as `cfg` does; reporting fields such as
    `log_every` (`TrainConfig.not_in_key`) do not count."""
    try:
        before = type(cfg).model_validate_json(saved)
    except ValueError:  # a field since removed or renamed
        return False

    def training(config: TrainConfig) -> dict[str, Any]:
        return {name: value for name, value in config.key_dump().items() if name not in cfg.not_in_key}

    return training(before) == training(cfg)


def train(
    clips: Sequence[TrainClip],
    empty_text: tuple[torch.Tensor, torch.Tensor],
    vae_norm: LatentNorm | Any,
    cfg: TrainConfig,
    run_dir: str | Path,
    base: BaseModelConfig | None = None,
    *,
    stop_at: int | None = None,
    sampler: Callable[[torch.nn.Module, int], Any] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Train the relation LoRAs on `clips`; resume from the newest checkpoint in `run_dir`.

    `empty_text` is (embeds (L, D), mask (L,)) of the empty prompt, for caption dropout.
    `vae_norm` is the VAE config (or `LatentNorm`) whose latents_mean / latents_std /
    scaling_factor normalize the latents as the family's pipeline un-normalizes them.
    `stop_at` stops after that step as if interrupted (no export); `sampler(transformer, step)`
    replaces the default periodic sampler (relation + FFN LoRAs through the family's pipeline);
    `on_step(record)` is called after every step with its record (progress reporting); the
    losses are logged every `cfg.log_every` steps and at the first and last step of the run,
    while `metrics.jsonl` gets every step;
    `on_checkpoint(path)` after every checkpoint is written (e.g. to upload it).
    At the end the inference LoRA is written to `run_dir/relation_lora.safetensors`.
    """
    base = base or BaseModelConfig()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_clips(clips, cfg)
    if cfg.lora.mode == "direct" and (cfg.hmt or cfg.rcl):
        log.info("direct LoRA baseline: plain loss (mask weighting and the contrastive loss are off)")
    family = family_of(base)
    model_dir = resolve_model_dir(base)
    device = resolve_device(base)
    dtype = resolve_dtype(base, device)
    state = build_state(cfg, family, model_dir, device, dtype)

    checkpoints = checkpoint_dirs(run_dir)
    resumed_from = 0
    if checkpoints:
        load_checkpoint(state, checkpoints[-1], cfg)
        resumed_from = state.step
        log.info("resumed from %s (step %d)", checkpoints[-1], state.step)
    metrics_path = run_dir / "metrics.jsonl"
    _truncate_metrics(metrics_path, state.step)

    last_step = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    if sampler is None and cfg.sample_every > 0 and state.step < last_step:
        sampler = TrainingSampler(family, model_dir, cfg.sample, cfg.sample_prompt, run_dir / "samples", device, dtype)

    record = _last_record(metrics_path)
    first_step = state.step + 1
    bar = tqdm(total=cfg.steps, initial=state.step, desc="train", unit="step", disable=None)
    with bar, metrics_path.open("a") as metrics:
        while state.step < last_step:
            try:
                record = train_step(state, clips, empty_text, vae_norm, cfg)
            except NonFiniteLossError as exc:
                good = checkpoint_dirs(run_dir)
                where = good[-1] if good else "none (no checkpoint written yet)"
                raise NonFiniteLossError(f"{exc}; training stopped, last good checkpoint: {where}") from exc
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            if should_log(state.step, first_step, last_step, cfg.log_every):
                log.info("%s", step_line(record, cfg.steps))
            bar.update(1)
            bar.set_postfix(loss=format_sig(record["loss_rec"]), group=record["group"])
            if on_step is not None:
                on_step(record)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                checkpoint = save_checkpoint(state, run_dir, cfg)
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint)
            if sampler is not None and cfg.sample_every > 0 and state.step % cfg.sample_every == 0:
                _sample(sampler, state)

    lora_path = None
    if state.step >= cfg.steps:
        lora_path = lora.export_inference_lora(state.transformer, run_dir / LORA_FILE)
    checkpoints = checkpoint_dirs(run_dir)
    return TrainResult(
        final_step=state.step,
        run_dir=run_dir,
        lora_path=lora_path,
        checkpoint=checkpoints[-1] if checkpoints else None,
        loss_rec=record.get("loss_rec"),
        loss_rcl=record.get("loss_rcl"),
        resumed_from=resumed_from,
        parameter_table=state.parameter_table,
    )


def should_log(step: int, first: int, last: int, every: int) -> bool:
    """Whether step `step` gets a log line: every `every` steps, and the first and last step of the run."""
    return step in (first, last) or step % every == 0


def step_line(record: dict[str, Any], total: int) -> str:
    """`step 50/2400 group=relation loss_rec=0.1235 loss_rcl=0.5678 lr=0.0002` (4 significant figures)."""
    return (
        f"step {record['step']}/{total} group={record['group']} loss_rec={format_sig(record['loss_rec'])} "
        f"loss_rcl={format_sig(record['loss_rcl'], missing='-')} lr={format_sig(record['lr'])}"
    )


def _sample(sampler: Callable[[torch.nn.Module, int], Any], state: TrainState) -> None:
    """Sample with the inference adapters only, then give the next step a fresh activation."""
    inference = [a for a in state.adapters if a in lora.INFERENCE_ADAPTERS]
    lora.activate_adapters(state.transformer, inference)
    state.active = ()
    state.transformer.eval()
    try:
        with torch.no_grad():
            sampler(state.transformer, state.step)
    finally:
        state.transformer.train()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of `metrics.jsonl`, one per logged step.

    A torn last line (the disk filled up or the process was killed mid-write) is ignored with
    a warning: resuming rewrites the log without it. A bad line anywhere else means the log
    was damaged otherwise; that is an error naming the file and line.
    """
    lines = path.read_text().splitlines() if path.exists() else []
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines):
                log.warning("%s: ignoring a torn last line (%d) left by an interrupted write: %.60r", path, number, line)
                break
            raise ValueError(f"{path} line {number} is not a JSON record ({exc}); fix or remove that line to resume") from None
    return records


def _last_record(path: Path) -> dict[str, Any]:
    """The last logged step (so a rerun of a finished run still reports its losses)."""
    records = read_metrics(path)
    return records[-1] if records else {}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines after `step` (written by an interrupted run past its last checkpoint) and torn lines."""
    if not path.exists():
        return
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
