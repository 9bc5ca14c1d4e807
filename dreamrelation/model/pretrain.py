"""Pretraining a tiny Mochi base model from scratch on the relational toy world (issue 13 §2).

The real classes at toy sizes, so the result loads like Mochi-1 (`model.model_dir`):
`AutoencoderKLMochi`, `MochiTransformer3DModel` and a frozen, randomly initialised tiny T5
whose tokenizer knows the world's words. Two phases, each resumable from its last checkpoint:

1. VAE: reconstruction MSE + a small KL term on freshly rendered world clips (an endless,
   seeded stream: batch k is a function of (seed, k)), on random 6k+1-frame windows and,
   for most steps, random spatial crops (cheaper; the convolutions are local). Afterwards the
   per-channel mean/std of the posterior modes of held-out clips are written into the VAE
   config (`latents_mean`, `latents_std`), so `normalize_latents` and `MochiPipeline` agree
   (METHOD.md §1 Decision).
2. DiT: the rectified-flow objective of METHOD.md §1 (x_s = (1-s) z0 + s eps, t = 1000 (1-s),
   target v = z0 - eps, caption dropout for CFG) on the normalized latents of a fixed set of
   world clips whose relations exclude the study's targets (the base never sees their verbs);
   optionally with HMT's mask weighting (METHOD.md §3) on the subjects' latent cells
   (`dit.subject_weight`), from the renderer's own masks.

Plain torch; the stage body (`stages/pretrain.py`) renders nothing itself and adds the gates.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer
from transformers.models.t5.modeling_t5 import T5Attention

from dreamrelation.data.masks import latent_coverage, latent_grid, temporal_average
from dreamrelation.data.previews import format_sig
from dreamrelation.data.world import (
    ALL_RELATIONS,
    BODIES,
    BODY_NOUN,
    KINDS,
    PALETTE,
    RELATIONS,
    SCALES,
    SCENE_WORDS,
    WorldConfig,
    render_clip,
    sample_specs,
)
from dreamrelation.model.config import PretrainConfig
from dreamrelation.model.joint_attention import batched_joint_attention, trim_text_padding
from dreamrelation.model.losses import masked_flow_loss
from dreamrelation.model.family import normalize_latents
from dreamrelation.model.mochi import TINY_T5, encode_text, flow_target, timestep_from_noise_level, tiny_tokenizer
from dreamrelation.model.train import add_noise, lr_factor, step_generator

log = logging.getLogger("dreamrelation.pretrain")

#: Words of the world's captions, whole pieces in the tokenizer (the rest is spelled).
WORLD_WORDS = sorted(
    {"dark", "light", *PALETTE, *(k.noun for k in KINDS.values())}
    | {word for r in RELATIONS.values() for word in r.verb.split()}
)
#: World v2 adds its bodies, scales, scenes and the loom verb (issue 21 §1).
WORLD_V2_WORDS = sorted(
    set(WORLD_WORDS) | {BODY_NOUN, "on", "background", *SCALES, *SCENE_WORDS.values()}
    | {word for k in BODIES.values() for word in k.noun.split()}
    | {word for r in ALL_RELATIONS.values() for word in r.verb.split()}
)


# --------------------------------------------------------------------------- models


def world_tokenizer(version: int = 1) -> T5Tokenizer:
    """The tiny offline T5 tokenizer with the words of world `version` as whole pieces."""
    return tiny_tokenizer(extra_words=WORLD_WORDS if version == 1 else WORLD_V2_WORDS)


def build_models(cfg: PretrainConfig) -> tuple[AutoencoderKLMochi, MochiTransformer3DModel, T5EncoderModel, T5Tokenizer]:
    """Fresh random VAE, DiT and T5 (METHOD.md §1 tiny-config constraints), seeded by `cfg.seed`."""
    tokenizer = world_tokenizer(cfg.world.version)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        channels = tuple(cfg.vae.block_channels)
        vae = AutoencoderKLMochi(
            latent_channels=12,
            encoder_block_out_channels=channels,
            decoder_block_out_channels=channels,
            layers_per_block=(1, 1, 1, 1, 1),
            add_attention_block=(False,) * 5,
            scaling_factor=1.0,
        )
        d = cfg.dit
        transformer = MochiTransformer3DModel(
            patch_size=d.patch_size,
            num_attention_heads=d.num_attention_heads,
            attention_head_dim=d.attention_head_dim,
            num_layers=d.num_layers,
            pooled_projection_dim=TINY_T5["d_model"],
            in_channels=12,
            text_embed_dim=TINY_T5["d_model"],
            time_embed_dim=64,
            max_sequence_length=256,
        )
        init_pos_frequencies(transformer, cfg.world, d.patch_size)
        buckets = 16 if cfg.t5_heads == "neighbours" else TINY_T5["relative_attention_num_buckets"]
        t5 = T5Config(vocab_size=len(tokenizer), **{**TINY_T5, "relative_attention_num_buckets": buckets})
        text_encoder = T5EncoderModel(t5).eval()
        if cfg.t5_heads == "neighbours":
            read_neighbours(text_encoder)
    return vae, transformer, text_encoder, tokenizer


#: Word offset each head of the `t5_heads="neighbours"` T5 reads (one per head of `TINY_T5`).
NEIGHBOUR_OFFSETS = (-2, -1, 1, 2)


def read_neighbours(text_encoder: T5EncoderModel, strength: float = 10.0) -> None:
    """Point head h of every layer of a random T5 at the word `NEIGHBOUR_OFFSETS[h]` away.

    Sets the relative-position bias (shared by all layers) to `strength` at that offset's bucket
    and 0 elsewhere, so each word's output mixes its own features with its neighbours': in
    "a dark red triangle", the features of "triangle" carry "dark" (two back), which is what lets
    the DiT bind a kind word to the dark or the light subject. A pretrained T5 contextualizes
    words by itself; a random one barely does (docs/study.md §5). The offsets need exact buckets
    (|offset| < num_buckets / 4).
    """
    config = text_encoder.config
    if len(NEIGHBOUR_OFFSETS) != config.num_heads:
        raise ValueError(f"read_neighbours needs {len(NEIGHBOUR_OFFSETS)} heads, the T5 has {config.num_heads}")
    bias = text_encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    with torch.no_grad():
        bias.weight.zero_()
        for head, offset in enumerate(NEIGHBOUR_OFFSETS):
            bucket = T5Attention._relative_position_bucket(
                torch.tensor(offset), bidirectional=True, num_buckets=config.relative_attention_num_buckets,
                max_distance=config.relative_attention_max_distance)
            bias.weight[int(bucket), head] = strength


def init_pos_frequencies(transformer: MochiTransformer3DModel, world: WorldConfig, patch_size: int) -> None:
    """Log-spaced RoPE frequencies with random signs (real weights overwrite the zeros).

    `MochiRoPE` rescales the patch grid to a 192x192 area, so spatial positions step by
    sqrt(192^2 / tokens) while time steps by 1: spatial frequencies are divided by that step.
    """
    cell = 8 * patch_size  # pixels per token side (the VAE downsamples 8x)
    tokens = (world.height // cell) * (world.width // cell)
    spatial_step = math.sqrt(192 * 192 / tokens)
    _, heads, half = transformer.pos_frequencies.shape
    base = torch.logspace(math.log10(0.05), math.log10(1.5), half)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for axis, scale in enumerate((1.0, 1.0 / spatial_step, 1.0 / spatial_step)):
            signs = torch.randint(0, 2, (heads, half), generator=g) * 2 - 1
            transformer.pos_frequencies[axis] = base * scale * signs


# --------------------------------------------------------------------------- data


def videos_to_tensor(videos: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def _batch_seed(seed: int, phase: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, phase, step]).generate_state(1)[0]) % (2**31 - 1)


def vae_batch(cfg: PretrainConfig, step: int, crop: bool) -> torch.Tensor:
    """Batch `step` of the VAE stream: windows of freshly rendered clips (all relations, all kinds)."""
    v = cfg.vae
    specs = sample_specs(cfg.world, v.batch_size, relations=cfg.world.relations, seed=_batch_seed(cfg.seed, 1, step))
    rng = np.random.default_rng([cfg.seed, 2, step])
    windows = []
    for spec in specs:
        video = render_clip(spec, cfg.world).video
        start = int(rng.integers(0, video.shape[0] - v.frames + 1))
        window = video[start : start + v.frames]
        if crop:
            top = int(rng.integers(0, (window.shape[1] - v.crop_height) // 16 + 1)) * 16
            left = int(rng.integers(0, (window.shape[2] - v.crop_width) // 16 + 1)) * 16
            window = window[:, top : top + v.crop_height, left : left + v.crop_width]
        windows.append(window)
    return videos_to_tensor(np.stack(windows))


def render_set(cfg: PretrainConfig, n: int, relations: Sequence[str], phase: int) -> list[Any]:
    """`n` world clips of `relations` (a fixed set, seeded by phase)."""
    specs = sample_specs(cfg.world, n, relations=list(relations), seed=_batch_seed(cfg.seed, phase, 0))
    return [render_clip(spec, cfg.world) for spec in specs]


# --------------------------------------------------------------------------- checkpoints


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any] | None:
    return torch.load(path, weights_only=False) if path.is_file() else None


@dataclass
class PhaseResult:
    """What a phase reports: steps run, where it resumed, and its loss curve (every 10 steps)."""

    steps: int
    resumed_from: int
    losses: list[tuple[int, float]]


def _run_phase(
    name: str,
    model: torch.nn.Module,
    steps: int,
    lr: float,
    warmup: int,
    checkpoint: Path,
    checkpoint_every: int,
    loss_at: Callable[[int], torch.Tensor],
    on_step: Callable[[int, float], None] | None,
) -> PhaseResult:
    """One resumable AdamW loop: `loss_at(step)` computes the loss of batch `step` (0-based)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: lr_factor(k, warmup, steps))
    losses: list[tuple[int, float]] = []
    start = 0
    state = _load(checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, losses = state["step"], state["losses"]
        log.info("%s: resumed at step %d/%d", name, start, steps)
    model.train()
    running = []
    for step in range(start, steps):
        loss = loss_at(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: non-finite loss at step {step + 1}; last checkpoint {checkpoint}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        value = loss.item()
        running.append(value)
        if (step + 1) % 10 == 0:
            losses.append((step + 1, float(np.mean(running))))
            log.info("%s step %d/%d loss %s", name, step + 1, steps, format_sig(losses[-1][1]))
            running = []
        if on_step is not None:
            on_step(step + 1, value)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "step": step + 1, "losses": losses})
    model.eval()
    return PhaseResult(steps, start, losses)


# --------------------------------------------------------------------------- phases


def train_vae(
    vae: AutoencoderKLMochi, cfg: PretrainConfig, work: Path, on_step: Callable[[int, float], None] | None = None
) -> PhaseResult:
    """Phase 1: reconstruction + KL on the endless world stream; crops first, whole frames last."""
    v = cfg.vae

    def loss_at(step: int) -> torch.Tensor:
        x = vae_batch(cfg, step, crop=step < v.steps - v.full_frame_steps)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_batch_seed(cfg.seed, 3, step))
            posterior = vae.encode(x).latent_dist
            z = posterior.sample()
        recon = vae.decode(z).sample
        kl = posterior.kl().mean() / x[0].numel()
        return torch.mean((recon - x) ** 2) + v.kl_weight * kl

    return _run_phase("vae", vae, v.steps, v.lr, 50, work / "vae.pt", v.checkpoint_every, loss_at, on_step)


@torch.no_grad()
def encode_clips(vae: AutoencoderKLMochi, videos: np.ndarray, batch: int = 8) -> torch.Tensor:
    """Posterior modes (N, 12, f, h, w) of uint8 videos (N, T, H, W, 3), raw (not normalized)."""
    out = [vae.encode(videos_to_tensor(videos[i : i + batch])).latent_dist.mode() for i in range(0, len(videos), batch)]
    return torch.cat(out)


@torch.no_grad()
def decode_clips(vae: AutoencoderKLMochi, latents: torch.Tensor, batch: int = 8) -> np.ndarray:
    """uint8 videos (N, T, H, W, 3) of raw (not normalized) latents: the inverse of `encode_clips`."""
    out = [vae.decode(latents[i : i + batch]).sample.clamp(-1, 1) for i in range(0, len(latents), batch)]
    return np.concatenate([((y + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy() for y in out])


def set_latent_stats(vae: AutoencoderKLMochi, cfg: PretrainConfig) -> tuple[list[float], list[float]]:
    """Measure per-channel latent mean/std on held-out clips and write them into the VAE config."""
    clips = render_set(cfg, cfg.vae.stats_clips, cfg.world.relations, phase=4)
    latents = encode_clips(vae, np.stack([c.video for c in clips]))
    mean = latents.mean(dim=(0, 2, 3, 4)).tolist()
    std = latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-4).tolist()
    vae.register_to_config(latents_mean=tuple(mean), latents_std=tuple(std), scaling_factor=1.0)
    return mean, std


@dataclass
class DitData:
    """The transformer phase's fixed training set: normalized latents and T5 features."""

    latents: torch.Tensor  # (N, 12, f, h, w)
    embeds: torch.Tensor  # (N, L, D)
    masks: torch.Tensor  # (N, L) bool
    empty: tuple[torch.Tensor, torch.Tensor]  # (L, D), (L,)
    captions: list[str]


@torch.no_grad()
def encode_training_set(
    vae: AutoencoderKLMochi, tokenizer: T5Tokenizer, text_encoder: T5EncoderModel, videos: np.ndarray,
    captions: list[str],
) -> DitData:
    """The DiT's training set: normalized VAE latents of uint8 `videos` and T5 features of `captions`."""
    parts = []
    for i in range(0, len(videos), 96):  # whole batches of 8, so chunking changes no number
        parts.append(encode_clips(vae, videos[i : i + 96]))
        log.info("dit data: encoded %d/%d clips", min(i + 96, len(videos)), len(videos))
    text = [encode_text(tokenizer, text_encoder, captions[i : i + 64]) for i in range(0, len(captions), 64)]
    empty = encode_text(tokenizer, text_encoder, [""])
    return DitData(normalize_latents(torch.cat(parts), vae.config), torch.cat([e for e, _ in text]),
                   torch.cat([m for _, m in text]), (empty[0][0], empty[1][0]), captions)


def training_clips(cfg: PretrainConfig) -> list[Any]:
    """The DiT phase's clips (seen relations only, every kind): a function of the config."""
    return render_set(cfg, cfg.dit.clips, cfg.seen_relations, phase=5)


def clip_relation_masks(clips: Sequence[Any], kind: str = "any") -> torch.Tensor:
    """Latent relation masks R (N, f, h, w) of rendered world clips: any-coverage (METHOD.md §3) or
    the covered fraction (`kind="fraction"`) of the subjects' union on the 8x grid, then causal
    averaging over T_c frames."""
    reduce = latent_coverage if kind == "fraction" else latent_grid
    return torch.from_numpy(np.stack([temporal_average(reduce(c.masks.any(axis=1))) for c in clips]))


def subject_masks(cfg: PretrainConfig, captions: Sequence[str]) -> torch.Tensor:
    """`clip_relation_masks` of the DiT's training clips, of the kind `dit.subject_mask` names.

    The clips are rendered again (a few ms each); `captions` are the encoded set's, and a clip
    whose caption differs means the set was encoded from other clips: an error, not a silent mismatch.
    """
    clips = training_clips(cfg)
    if [c.caption for c in clips] != list(captions):
        raise RuntimeError("the encoded DiT training set does not match this config's clips; "
                           "delete work/dit_data.pt to encode it again")
    return clip_relation_masks(clips, cfg.dit.subject_mask)


def dit_data(
    vae: AutoencoderKLMochi, tokenizer: T5Tokenizer, text_encoder: T5EncoderModel, cfg: PretrainConfig, work: Path
) -> DitData:
    """Encode (once, cached in `work`) the pretraining clips: seen relations only, every kind."""
    cache = work / "dit_data.pt"
    state = _load(cache)
    if state is None:
        clips = training_clips(cfg)
        captions = [c.caption for c in clips]
        leaked = [c for c in captions for r in cfg.held_out_relations if ALL_RELATIONS[r].verb in c]
        if leaked:
            raise AssertionError(f"a held-out verb in a pretraining caption: {leaked[0]}")
        state = vars(encode_training_set(vae, tokenizer, text_encoder, np.stack([c.video for c in clips]), captions))
        _save(cache, state)
    return DitData(**state)


def draw_noise_levels(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    """Training noise levels s in (0, 1): uniform, or logit-normal s = sigmoid(n), n ~ N(0, 1)."""
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=g))
    return torch.rand(n, generator=g)


def train_dit(
    transformer: MochiTransformer3DModel,
    data: DitData,
    cfg: PretrainConfig,
    work: Path,
    on_step: Callable[[int, float], None] | None = None,
) -> PhaseResult:
    """Phase 2: rectified flow (METHOD.md §1) with caption dropout on the fixed latent set, each
    cell's squared error weighted by 1 + subject_weight * R (METHOD.md §3; 0: the plain loss) in
    the samples whose noise level s is at most `subject_weight_max_noise`, and by 1 in the others.

    Runs with the exact, faster joint attention of `model.joint_attention` (same numbers).
    """
    d = cfg.dit
    subjects = subject_masks(cfg, data.captions) if d.subject_weight > 0 else None

    def loss_at(step: int) -> torch.Tensor:
        g = step_generator(cfg.seed, step)
        index = torch.randint(0, len(data.latents), (d.batch_size,), generator=g)
        z0 = data.latents[index]
        embeds, masks = data.embeds[index].clone(), data.masks[index].clone()
        drop = torch.rand(d.batch_size, generator=g) < d.caption_dropout
        embeds[drop], masks[drop] = data.empty[0], data.empty[1]
        embeds, masks = trim_text_padding(embeds, masks)
        s = draw_noise_levels(d.noise_levels, d.batch_size, g)
        eps = torch.randn(z0.shape, generator=g)
        v_pred = transformer(
            hidden_states=add_noise(z0, eps, s),
            encoder_hidden_states=embeds,
            timestep=timestep_from_noise_level(s),
            encoder_attention_mask=masks,
            return_dict=False,
        )[0]
        weighted = None
        if subjects is not None:  # R of the samples whose noise level is at most subject_weight_max_noise
            weighted = subjects[index] * (s <= d.subject_weight_max_noise).float()[:, None, None, None]
        return masked_flow_loss(v_pred, flow_target(z0, eps), weighted, d.subject_weight)

    with batched_joint_attention(transformer):
        return _run_phase("dit", transformer, d.steps, d.lr, d.warmup_steps, work / "dit.pt", d.checkpoint_every,
                          loss_at, on_step)


def save_base_model(
    folder: Path,
    vae: AutoencoderKLMochi,
    transformer: MochiTransformer3DModel,
    text_encoder: T5EncoderModel,
    tokenizer: T5Tokenizer,
) -> Path:
    """The diffusers `genmo/mochi-1-preview` layout, loadable with `MochiPipeline.from_pretrained`."""
    pipe = MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
