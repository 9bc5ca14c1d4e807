"""The Mochi-1 base model: tiny demo models, local loading, and latent/text encoding helpers.

METHOD.md §1. Everything is read from a local folder in the diffusers `genmo/mochi-1-preview`
layout (`transformer/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json`), so
`MochiPipeline.from_pretrained(folder)` and the loaders here see the same files. Nothing is
downloaded unless `BaseModelConfig.allow_download` is set.

The `demo` profile builds tiny randomly initialised models of the *same* diffusers /
transformers classes, respecting the constraints listed in METHOD.md §1: 12 latent channels
and the VAE's default 8x / 6x compression (the pipeline hard-codes both), VAE channel counts
that are multiples of 32, `text_embed_dim` equal to the T5 `d_model` and divisible by 8, an
even attention head dim, and a random `pos_frequencies` (zeros would mean no positions).
"""

from __future__ import annotations

import logging
import os
import shutil
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLMochi,
    FlowMatchEulerDiscreteScheduler,
    MochiPipeline,
    MochiTransformer3DModel,
)
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from dreamrelation.model.config import BaseModelConfig

log = logging.getLogger("dreamrelation.model")

MOCHI_REPO = "genmo/mochi-1-preview"
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
#: Bump when the tiny configs below change, so an old cached tiny model is not reused.
TINY_VERSION = 1

TINY_TRANSFORMER: dict[str, Any] = dict(
    patch_size=2,
    num_attention_heads=2,
    attention_head_dim=32,
    num_layers=2,
    pooled_projection_dim=32,
    in_channels=12,
    text_embed_dim=32,
    time_embed_dim=32,
    max_sequence_length=256,
)
TINY_VAE: dict[str, Any] = dict(
    latent_channels=12,
    encoder_block_out_channels=(32, 32, 32, 32),
    decoder_block_out_channels=(32, 32, 32, 32),
    layers_per_block=(1, 1, 1, 1, 1),
    add_attention_block=(False, False, False, False, False),
)
TINY_T5: dict[str, Any] = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=32,
    feed_forward_proj="gated-gelu",
)
#: Whole words of the tiny vocabulary; anything else is spelled letter by letter.
TINY_WORDS = (
    "a an the is are and of to with in on at by two one other each another person people man "
    "woman men women boy girl child bear raccoon dog cat fox monkey panda rabbit lion tiger "
    "shaking hands hand handshaking hugging hug pushing kicking punching slapping pointing giving "
    "walking towards apart high-five cheers carry photo follow whisper exchange support meadow "
    "field forest room park street beach snow"
).split()


class ModelFolderError(FileNotFoundError):
    """A model folder is missing or incomplete; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class LatentNorm:
    """Per-channel latent normalization of the VAE (METHOD.md §1 Decision)."""

    latents_mean: tuple[float, ...] | None
    latents_std: tuple[float, ...] | None
    scaling_factor: float = 1.0

    @classmethod
    def from_config(cls, vae_config: Any) -> LatentNorm:
        """From a VAE config, a mapping with the same keys, or another `LatentNorm`."""

        def get(key: str, default: Any = None) -> Any:
            if isinstance(vae_config, Mapping):
                return vae_config.get(key, default)
            return getattr(vae_config, key, default)

        mean, std = get("latents_mean"), get("latents_std")
        return cls(
            latents_mean=None if mean is None else tuple(float(v) for v in mean),
            latents_std=None if std is None else tuple(float(v) for v in std),
            scaling_factor=float(get("scaling_factor", 1.0)),
        )


# --------------------------------------------------------------------------- tiny models


def tiny_tokenizer(extra_words: Sequence[str] = ()) -> T5Tokenizer:
    """An offline T5 (unigram) tokenizer with a small fixed vocabulary (METHOD.md §1).

    `extra_words` become whole pieces too (the toy world's nouns, colours and verbs).
    """
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    words = list(dict.fromkeys([*TINY_WORDS, *extra_words]))
    pieces += [("▁" + word, -5.0) for word in words]
    chars = string.ascii_letters + string.digits + ".,;:!?'\"-()"
    pieces += [("▁" + c, -10.0) for c in chars] + [(c, -11.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=256)


def build_tiny_mochi(folder: str | Path, seed: int = 0) -> Path:
    """Build tiny random Mochi components and save them in the diffusers layout at `folder`.

    The folder is written under a temporary name and renamed when complete, so an interrupted
    build is never mistaken for a model, and an existing `folder` is never touched: a complete
    model there (a concurrent build that won) is returned, anything else is an error.
    Returns the folder.
    """
    folder = Path(folder)
    _refuse_foreign_folder(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        pipe = _tiny_pipeline(seed)
        pipe.save_pretrained(tmp, safe_serialization=True)
        try:
            os.rename(tmp, folder)  # fails rather than replace a folder that appeared meanwhile
        except OSError:
            if missing_components(folder):
                _refuse_foreign_folder(folder)
                raise
            return folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny Mochi (seed %d) at %s", seed, folder)
    return folder


def ensure_tiny_mochi(folder: str | Path, seed: int = 0) -> Path:
    """`build_tiny_mochi` unless a complete model is already at `folder` (idempotent)."""
    folder = Path(folder)
    if folder.is_dir() and not missing_components(folder):
        return folder
    return build_tiny_mochi(folder, seed)


def _refuse_foreign_folder(folder: Path) -> None:
    """A tiny model is only ever built where nothing is: never into (or over) an existing folder."""
    if folder.exists() and missing_components(folder):
        raise ModelFolderError(
            f"{folder} exists but is not a complete model (missing: {', '.join(missing_components(folder))}); "
            "the tiny demo model is only built where nothing is, so this folder is left untouched. "
            "Remove it yourself, or point model.models_cache elsewhere."
        )


def _tiny_pipeline(seed: int) -> MochiPipeline:
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = MochiTransformer3DModel(**TINY_TRANSFORMER)
        with torch.no_grad():  # real weights overwrite the zeros; random ones give positions
            transformer.pos_frequencies.normal_(0.0, 0.25)
        vae = AutoencoderKLMochi(**TINY_VAE)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TINY_T5))
    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    return MochiPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


# --------------------------------------------------------------------------- folders


def missing_components(folder: str | Path) -> list[str]:
    """What a model folder lacks, as readable entries (empty when complete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"the folder {folder} itself"]
    missing = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    for name in ("transformer", "vae", "text_encoder"):
        sub = folder / name
        if not (sub / "config.json").is_file():
            missing.append(f"{name}/config.json")
        if not any(sub.glob("*.safetensors")) and not any(sub.glob("*.bin")):
            missing.append(f"{name}/ weights (*.safetensors)")
    tokenizer_files = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
    if not any((folder / "tokenizer" / f).is_file() for f in tokenizer_files):
        missing.append("tokenizer/ (tokenizer.json or spiece.model)")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing


def check_model_dir(folder: str | Path) -> Path:
    """Return `folder` if it holds a complete model, else raise `ModelFolderError`."""
    folder = Path(folder)
    missing = missing_components(folder)
    if missing:
        raise ModelFolderError(
            f"Mochi-1 model folder {folder} is incomplete; missing: {', '.join(missing)}. "
            f"Get it on a machine with network access with `huggingface-cli download {MOCHI_REPO} "
            f"--local-dir {folder}` and copy it here, or set allow_download=true."
        )
    return folder


def resolve_model_dir(cfg: BaseModelConfig) -> Path:
    """The local model folder for `cfg`: the tiny model (built on first use) or the given folder."""
    if cfg.profile == "demo" and cfg.model_dir is None:
        return ensure_tiny_mochi(tiny_model_dir(cfg.models_cache, cfg.tiny_seed), cfg.tiny_seed)
    if cfg.profile == "demo":  # a user-named folder is read, never built into or replaced
        folder = check_model_dir(cfg.model_dir)
        log.warning(
            "model.profile is 'demo' but model.model_dir=%s is set: using the model in that folder with "
            "the demo's settings (for Mochi-1 weights and the paper's settings use -c mochi-1)", folder
        )
        return folder
    folder = Path(cfg.model_dir) if cfg.model_dir else Path(cfg.models_cache) / "mochi-1-preview"
    if missing_components(folder) and cfg.allow_download:
        from huggingface_hub import snapshot_download  # deferred: only when a download is allowed

        log.info("downloading %s to %s (allow_download is set)", MOCHI_REPO, folder)
        snapshot_download(MOCHI_REPO, local_dir=folder)
    if cfg.model_dir is None and missing_components(folder):
        raise ModelFolderError(
            f"profile 'mochi-1' needs model_dir: a local folder with {MOCHI_REPO} in the diffusers layout "
            f"(`huggingface-cli download {MOCHI_REPO} --local-dir <folder>`)."
        )
    return check_model_dir(folder)


def tiny_model_dir(models_cache: str | Path, seed: int) -> Path:
    """Where the demo's tiny model with this seed lives under the models cache."""
    return Path(models_cache) / f"tiny-mochi-v{TINY_VERSION}-seed{seed}"


def resolve_device(cfg: BaseModelConfig) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def resolve_dtype(cfg: BaseModelConfig, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on GPU, float32 on CPU."""
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


# --------------------------------------------------------------------------- loaders


def load_transformer(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> MochiTransformer3DModel:
    """The Mochi DiT from `folder/transformer`."""
    folder = check_model_dir(folder)
    model = MochiTransformer3DModel.from_pretrained(
        folder, subfolder="transformer", dtype=dtype, local_files_only=True
    )
    return model.to(device)


def load_vae(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> AutoencoderKLMochi:
    """The Mochi VAE from `folder/vae`."""
    folder = check_model_dir(folder)
    vae = AutoencoderKLMochi.from_pretrained(folder, subfolder="vae", dtype=dtype, local_files_only=True)
    return vae.to(device)


def load_text_encoder(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[T5Tokenizer, T5EncoderModel]:
    """The T5 tokenizer and encoder from `folder/tokenizer` and `folder/text_encoder`."""
    folder = check_model_dir(folder)
    tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype, local_files_only=True)
    return tokenizer, encoder.to(device).eval()


def load_pipeline(
    folder: str | Path,
    transformer: MochiTransformer3DModel | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MochiPipeline:
    """`MochiPipeline` from `folder`, optionally with another transformer (e.g. one being trained)."""
    folder = check_model_dir(folder)
    extra = {} if transformer is None else {"transformer": transformer}
    pipe = MochiPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# --------------------------------------------------------------------------- encoding


@torch.no_grad()
def encode_video(vae: AutoencoderKLMochi, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw VAE posterior (mean, logvar), each (B, 12, f, H/8, W/8), of a video (B, 3, F, H, W) in [-1, 1].

    F must be 6k+1 (f = (F-1)/6 + 1). The latents are *not* normalized; see `normalize_latents`.
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"encode_video expects (B, 3, F, H, W), got {tuple(video.shape)}")
    param = next(vae.parameters())
    posterior = vae.encode(video.to(device=param.device, dtype=param.dtype)).latent_dist
    return posterior.mean, posterior.logvar


def overlong_captions(tokenizer: T5Tokenizer, captions: list[str], max_length: int = 256) -> dict[int, int]:
    """Index -> T5 token count of the captions longer than `max_length` (encode_text truncates them)."""
    counts = [len(ids) for ids in tokenizer(captions, add_special_tokens=True).input_ids] if captions else []
    return {i: n for i, n in enumerate(counts) if n > max_length}


@torch.no_grad()
def encode_text(
    tokenizer: T5Tokenizer, text_encoder: T5EncoderModel, captions: list[str], max_length: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 features (B, L, D) and boolean mask (B, L), exactly as `MochiPipeline` computes them."""
    tokens = tokenizer(
        captions,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask.bool().to(device)
    embeds = text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    return embeds, mask


def _channel_stats(
    latents: torch.Tensor, vae_config: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    norm = vae_config if isinstance(vae_config, LatentNorm) else LatentNorm.from_config(vae_config)
    if norm.latents_mean is None or norm.latents_std is None:
        return None, None, norm.scaling_factor
    shape = (-1, 1, 1, 1)  # channels are dim -4 of (C, f, h, w) and (B, C, f, h, w)
    kw = dict(device=latents.device, dtype=latents.dtype)
    mean = torch.tensor(norm.latents_mean, **kw).view(shape)
    std = torch.tensor(norm.latents_std, **kw).view(shape)
    return mean, std, norm.scaling_factor


def normalize_latents(latents: torch.Tensor, vae_config: Any) -> torch.Tensor:
    """z0 = (latents - latents_mean) / latents_std * scaling_factor (METHOD.md §1 Decision).

    `vae_config` is the VAE's config, a mapping with the same keys, or a `LatentNorm`.
    """
    mean, std, scale = _channel_stats(latents, vae_config)
    if mean is None:
        return latents * scale
    return (latents - mean) / std * scale


def denormalize_latents(latents: torch.Tensor, vae_config: Any) -> torch.Tensor:
    """Inverse of `normalize_latents`, as `MochiPipeline` applies it before decoding."""
    mean, std, scale = _channel_stats(latents, vae_config)
    if mean is None:
        return latents / scale
    return latents * std / scale + mean
