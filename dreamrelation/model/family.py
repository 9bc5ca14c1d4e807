"""What every base-model family provides, behind one small interface (METHOD.md §1 Mochi-1, §9 Wan 2.1).

A `ModelFamily` is a frozen record of constants and functions; `model/mochi.py` and
`model/wan.py` each define one (`MOCHI`, `WAN`) and `model/families.py` picks it from the
config. Code above the model layer asks the family (load this, encode that, which timestep,
which target) and never tests which family it has.

Also here, because both families share them: the local model folder (diffusers layout,
`transformer/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json`; nothing is downloaded
unless `BaseModelConfig.allow_download` is set), the tiny-model builder that writes such a
folder atomically, the per-channel latent normalisation and device / dtype resolution.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from dreamrelation.model.config import BaseModelConfig

log = logging.getLogger("dreamrelation.model")

#: Written beside a toy base's `model/` folder by `dreamrelation pretrain --export` (its fingerprint).
TOY_BASE_FILE = "base.json"

#: (tokenizer, text encoder, captions, max_length) -> (features (B, L, D), mask (B, L) bool)
TextEncoder = Callable[[Any, torch.nn.Module, list[str], int], tuple[torch.Tensor, torch.Tensor]]
#: (transformer, x_t, t, text features, text mask) -> predicted velocity, as the family's pipeline calls it
Predict = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionLayout:
    """Where a model family's attention projections live (METHOD.md §2 for Mochi, §9 for Wan)."""

    family: str
    block: str  # regex of one block's self-attention (or joint attention) module
    projections: Mapping[str, tuple[str, ...]]  # q / k / v / out -> module names in `block`, one per stream
    cross_query: str | None = None  # regex of the cross-attention query; None under joint attention


class ModelFolderError(FileNotFoundError):
    """A model folder is missing or incomplete; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class ModelFamily:
    """One base-model family: its diffusers classes, its conventions and its tiny demo model."""

    name: str  # the `model.family` value
    title: str  # for messages: "Mochi-1", "Wan 2.1"
    hub_repo: str  # where the weights come from (only fetched with allow_download)
    preset: str  # the config preset for those weights (`-c <preset>`)
    temporal_compression: int  # T_c of the VAE: clips of T_c k + 1 frames
    latent_channels: int  # channels of the VAE's latents (the pipeline assumes them)
    max_text_length: int  # tokens the pipeline encodes a prompt to
    layout: AttentionLayout  # where the relation LoRA triplet goes (`model.lora`)
    blocks: str  # the transformer blocks' name prefix in the weights
    qkv_streams: Mapping[str, tuple[str, str, str]]  # stream -> its (Q, K, V) modules in a block (§7 analysis)
    transformer_class: type
    vae_class: type
    text_encoder_class: type
    tokenizer_class: type
    pipeline_class: type[DiffusionPipeline]
    scheduler_class: type
    tiny_pipeline: Callable[[int], DiffusionPipeline]  # seed -> tiny random pipeline of the real classes
    tiny_version: int  # bump when the tiny configs change, so an old cached tiny model is not reused
    encode_text: TextEncoder
    timestep: Callable[[torch.Tensor], torch.Tensor]  # noise level s in [0, 1] -> the transformer's t
    flow_target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z0, eps) -> the velocity to predict
    predict: Predict
    pipeline_text: Callable[..., dict[str, torch.Tensor]]  # (embeds, mask, neg embeds, neg mask) -> pipe kwargs

    # ------------------------------------------------------------------ folders

    def check_model_dir(self, folder: str | Path) -> Path:
        """Return `folder` if it holds a complete model, else raise `ModelFolderError`."""
        folder = Path(folder)
        missing = missing_components(folder)
        if missing and (folder.parent / TOY_BASE_FILE).is_file():  # an exported toy base: rebuilt, not downloaded
            raise ModelFolderError(
                f"toy base model folder {folder} is incomplete; missing: {', '.join(missing)}. It is the model of the "
                f"toy base exported to {folder.parent} ({TOY_BASE_FILE} beside it): restore the shipped one with "
                f"`git checkout -- {folder.parent}`, or rebuild it with `dreamrelation pretrain --export {folder.parent}`."
            )
        if missing:
            raise ModelFolderError(
                f"{self.title} model folder {folder} is incomplete; missing: {', '.join(missing)}. "
                f"Get it on a machine with network access with `huggingface-cli download {self.hub_repo} "
                f"--local-dir {folder}` and copy it here, or set allow_download=true."
            )
        return folder

    def tiny_dir(self, models_cache: str | Path, seed: int) -> Path:
        """Where the demo's tiny model of this family with this seed lives under the models cache."""
        return Path(models_cache) / f"tiny-{self.name}-v{self.tiny_version}-seed{seed}"

    def build_tiny(self, folder: str | Path, seed: int = 0) -> Path:
        """Build the tiny random model and save it in the diffusers layout at `folder`.

        The folder is written under a temporary name and renamed when complete, so an interrupted
        build is never mistaken for a model, and an existing `folder` is never touched: a complete
        model there (a concurrent build that won) is returned, anything else is an error.
        """
        folder = Path(folder)
        _refuse_foreign_folder(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            self.tiny_pipeline(seed).save_pretrained(tmp, safe_serialization=True)
            try:
                os.rename(tmp, folder)  # fails rather than replace a folder that appeared meanwhile
            except OSError:
                if missing_components(folder):
                    _refuse_foreign_folder(folder)
                    raise
                return folder
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("built tiny %s (seed %d) at %s", self.title, seed, folder)
        return folder

    def ensure_tiny(self, folder: str | Path, seed: int = 0) -> Path:
        """`build_tiny` unless a complete model is already at `folder` (idempotent)."""
        folder = Path(folder)
        if folder.is_dir() and not missing_components(folder):
            return folder
        return self.build_tiny(folder, seed)

    # ------------------------------------------------------------------ loaders

    def load_transformer(
        self, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.nn.Module:
        """The DiT from `folder/transformer`."""
        return self._load(self.transformer_class, folder, "transformer", dtype, device)

    def load_vae(
        self, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.nn.Module:
        """The video VAE from `folder/vae`."""
        return self._load(self.vae_class, folder, "vae", dtype, device)

    def _load(self, cls: type, folder: str | Path, subfolder: str, dtype: torch.dtype,
              device: str | torch.device) -> torch.nn.Module:
        """A diffusers model of `cls` from `folder/subfolder`, after checking the folder is complete."""
        model = cls.from_pretrained(self.check_model_dir(folder), subfolder=subfolder, dtype=dtype, local_files_only=True)
        return model.to(device)

    def load_text_encoder(
        self, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> tuple[Any, torch.nn.Module]:
        """The tokenizer and text encoder from `folder/tokenizer` and `folder/text_encoder`."""
        folder = self.check_model_dir(folder)
        tokenizer = self.tokenizer_class.from_pretrained(folder / "tokenizer", local_files_only=True)
        encoder = self.text_encoder_class.from_pretrained(folder / "text_encoder", dtype=dtype, local_files_only=True)
        return tokenizer, encoder.to(device).eval()

    def load_pipeline(
        self,
        folder: str | Path,
        transformer: torch.nn.Module | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> DiffusionPipeline:
        """The family's pipeline from `folder`, optionally with another transformer (e.g. one being trained)."""
        folder = self.check_model_dir(folder)
        extra = {} if transformer is None else {"transformer": transformer}
        pipe = self.pipeline_class.from_pretrained(folder, dtype=dtype, local_files_only=True, **extra)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    def pipeline_from_parts(
        self, transformer: torch.nn.Module, vae: torch.nn.Module, scheduler: Any
    ) -> DiffusionPipeline:
        """A pipeline without its text encoder (prompts given as features), around loaded parts."""
        pipe = self.pipeline_class(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # ------------------------------------------------------------------ latents

    @torch.no_grad()
    def encode_video(self, vae: torch.nn.Module, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw VAE posterior (mean, logvar), each (B, C, f, H/8, W/8), of a video (B, 3, F, H, W) in [-1, 1].

        F must be T_c k + 1 (f = (F - 1) / T_c + 1). The latents are *not* normalized; see `normalize_latents`.
        """
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"encode_video expects (B, 3, F, H, W), got {tuple(video.shape)}")
        if (video.shape[2] - 1) % self.temporal_compression:
            raise ValueError(
                f"{self.title}'s VAE needs {self.temporal_compression}k+1 frames, got {video.shape[2]}"
            )
        param = next(vae.parameters())
        posterior = vae.encode(video.to(device=param.device, dtype=param.dtype)).latent_dist
        return posterior.mean, posterior.logvar


def overlong_captions(tokenizer: Any, captions: list[str], max_length: int = 256) -> dict[int, int]:
    """Index -> token count of the captions longer than `max_length` (the families' `encode_text` truncates them)."""
    counts = [len(ids) for ids in tokenizer(captions, add_special_tokens=True).input_ids] if captions else []
    return {i: n for i, n in enumerate(counts) if n > max_length}


def missing_components(folder: str | Path) -> list[str]:
    """What a model folder in the diffusers layout lacks, as readable entries (empty when complete)."""
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


def _refuse_foreign_folder(folder: Path) -> None:
    """A tiny model is only ever built where nothing is: never into (or over) an existing folder."""
    if folder.exists() and missing_components(folder):
        raise ModelFolderError(
            f"{folder} exists but is not a complete model (missing: {', '.join(missing_components(folder))}); "
            "the tiny demo model is only built where nothing is, so this folder is left untouched. "
            "Remove it yourself, or point model.models_cache elsewhere."
        )


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


# --------------------------------------------------------------------------- latent normalisation


@dataclass(frozen=True)
class LatentNorm:
    """Per-channel latent normalization of the VAE (METHOD.md §1 Decision; §9 for Wan, no scaling factor)."""

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
        scale = get("scaling_factor", 1.0)
        return cls(
            latents_mean=None if mean is None else tuple(float(v) for v in mean),
            latents_std=None if std is None else tuple(float(v) for v in std),
            scaling_factor=1.0 if scale is None else float(scale),
        )


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
    """z0 = (latents - latents_mean) / latents_std * scaling_factor (METHOD.md §1 Decision, §9).

    `vae_config` is the VAE's config, a mapping with the same keys, or a `LatentNorm`.
    """
    mean, std, scale = _channel_stats(latents, vae_config)
    if mean is None:
        return latents * scale
    return (latents - mean) / std * scale


def denormalize_latents(latents: torch.Tensor, vae_config: Any) -> torch.Tensor:
    """Inverse of `normalize_latents`, as the pipelines apply it before decoding."""
    mean, std, scale = _channel_stats(latents, vae_config)
    if mean is None:
        return latents / scale
    return latents * std / scale + mean
