"""The encode_latents stage: VAE posteriors and T5 features of a relation's clips (METHOD.md §1).

Per manifest clip: the shared preprocessing (`data.video.load_clip`: 30 fps, first 6k+1
frames, centre crop, resize), the Mochi VAE posterior mean and log-variance (raw, not
normalized: training normalizes with the stored `latents_mean` / `latents_std` /
`scaling_factor`, METHOD.md §1 **Decision**), and the T5 features + attention mask of the
caption (256 tokens, exactly as `MochiPipeline` encodes prompts). The empty prompt's features
are stored once, for caption dropout (METHOD.md §1).

Output under `location` (layouts in docs/artifacts.md):
    latents.zarr   mean / logvar (n, 12, f, h, w) float32, one chunk per clip
    text.zarr      embeds (n, L, D) float32, mask (n, L) bool, empty_embeds (L, D), empty_mask (L,)
A clip that cannot be read or encoded is recorded as failed with the reason (its rows stay
NaN / False) and the stage goes on with the rest.

Heavy imports (torch, diffusers via `model.mochi`) are deferred into the functions that load the
models: `LatentConfig` is part of the pipeline config, which must stay cheap to import.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
import zarr
from pydantic import Field
from tqdm.auto import tqdm

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.manifest import ClipRecord, Manifest
from dreamrelation.data.masks import latent_shape
from dreamrelation.data.store import fetch_local, zarr_location
from dreamrelation.data.video import VideoConfig, load_clip
from dreamrelation.model.config import BaseModelConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger("dreamrelation.latents")

LATENTS_STORE = "latents.zarr"
TEXT_STORE = "text.zarr"
FORMAT_VERSION = 1


class LatentConfig(StrictConfig):
    """Parameters of the encode_latents stage (METHOD.md §1)."""

    batch_size: int = Field(1, ge=1, description="Clips per VAE encode call")
    text_batch_size: int = Field(8, ge=1, description="Captions per T5 encode call")
    max_text_length: int = Field(
        256, ge=1, description="Text tokens per caption: the family's pipeline length (Mochi-1 256 T5, Wan 512 UMT5)"
    )
    vae_tiling: bool | Literal["auto"] = Field(
        "auto",
        description="Encode in spatial tiles (less GPU memory, slower; latents differ slightly at tile "
        "seams). 'auto': tile when a clip has more than `vae_tiling_above` megapixel-frames, since an "
        "untiled full-resolution encode is the largest allocation of the pipeline (docs/performance.md).",
    )
    vae_tiling_above: float = Field(
        10.0,
        ge=0,
        description="Size above which 'auto' tiling encodes in tiles, in megapixel-frames "
        "(frames x height x width / 1e6): 61x480x848 is 24.8, 25x480x848 is 10.2, the demo's 25x96x160 is 0.4.",
    )
    vae_slicing: bool = Field(False, description="Encode a batch one clip at a time inside the VAE")


def use_vae_tiling(config: LatentConfig, video: VideoConfig) -> bool:
    """Whether clips of `video` are VAE-encoded in tiles: as configured, or for 'auto' by clip size.

    (The Mochi VAE only tiles frames larger than its 256 px tile, so small clips are never cut.)
    """
    if config.vae_tiling != "auto":
        return config.vae_tiling
    return video.num_frames * video.height * video.width / 1e6 > config.vae_tiling_above


def video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (3, F, H, W) in [-1, 1], the VAE's input range."""
    import torch  # deferred: heavy, see the module docstring

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    return video.float() / 127.5 - 1.0


def _create(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: str, fill: Any) -> zarr.Array:
    """An array with one chunk per clip (the leading axis)."""
    return group.create_array(name, shape=shape, chunks=(1, *shape[1:]), dtype=dtype, fill_value=fill)


def encode_captions(
    manifest: Manifest, location: str, model_dir: str, model: BaseModelConfig, config: LatentConfig,
    fingerprint: str, failures: dict[str, str],
) -> None:
    """T5 features of every caption (clips not in `failures`) and of "" into `<location>/text.zarr`."""
    import torch  # deferred: heavy, see the module docstring

    from dreamrelation.model.families import family_of  # deferred: heavy
    from dreamrelation.model.family import overlong_captions, resolve_device, resolve_dtype  # deferred: heavy

    family = family_of(model)
    device = resolve_device(model)
    tokenizer, encoder = family.load_text_encoder(model_dir, resolve_dtype(model, device), device)
    length, width = config.max_text_length, encoder.config.d_model
    encode_text = family.encode_text
    group = zarr.open_group(zarr_location(f"{location}/{TEXT_STORE}"), mode="w")
    embeds = _create(group, "embeds", (len(manifest.clips), length, width), "float32", np.nan)
    masks = _create(group, "mask", (len(manifest.clips), length), "bool", False)

    empty_embeds, empty_mask = encode_text(tokenizer, encoder, [""], length)
    group.create_array("empty_embeds", data=empty_embeds[0].float().cpu().numpy())
    group.create_array("empty_mask", data=empty_mask[0].cpu().numpy())

    todo = [(i, c) for i, c in enumerate(manifest.clips) if c.clip_id not in failures]
    overlong = overlong_captions(tokenizer, [c.caption for _, c in todo], length)
    for k, count in overlong.items():
        log.warning("encode_latents: the caption of clip %s has %d T5 tokens; only the first %d are used",
                    todo[k][1].clip_id, count, length)
    for start in range(0, len(todo), config.text_batch_size):
        batch = todo[start : start + config.text_batch_size]
        features, mask = encode_text(tokenizer, encoder, [c.caption for _, c in batch], length)
        for row, (i, _) in enumerate(batch):
            embeds[i] = features[row].float().cpu().numpy()
            masks[i] = mask[row].cpu().numpy()
    group.attrs.update(
        {
            **_stage_attrs(manifest, fingerprint, model, model_dir),
            "text_encoder": type(encoder).__name__,
            "max_length": length,
            "embed_dim": int(width),
            "clip_ids": [c.clip_id for c in manifest.clips],
            "captions": [c.caption for c in manifest.clips],
            "truncated_captions": [todo[k][1].clip_id for k in overlong],
        }
    )
    del encoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_videos(
    manifest: Manifest, location: str, model_dir: str, video: VideoConfig, model: BaseModelConfig,
    config: LatentConfig, failures: dict[str, str], progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """VAE posterior mean/logvar of every clip into `<location>/latents.zarr`; returns the VAE norm."""
    import torch  # deferred: heavy, see the module docstring

    from dreamrelation.model.families import family_of  # deferred: heavy
    from dreamrelation.model.family import LatentNorm, resolve_device, resolve_dtype  # deferred: heavy

    family = family_of(model)
    device = resolve_device(model)
    vae = family.load_vae(model_dir, resolve_dtype(model, device), device)
    vae.eval()
    if use_vae_tiling(config, video):
        vae.enable_tiling()
        log.info("encode_latents: VAE tiling on for %dx%dx%d clips", video.num_frames, video.height, video.width)
    if config.vae_slicing:
        vae.enable_slicing()
    shape = (family.latent_channels, *latent_shape(video))
    group = zarr.open_group(zarr_location(f"{location}/{LATENTS_STORE}"), mode="w")
    means = _create(group, "mean", (len(manifest.clips), *shape), "float32", np.nan)
    logvars = _create(group, "logvar", (len(manifest.clips), *shape), "float32", np.nan)

    def encode_batch(batch: list[tuple[int, ClipRecord, np.ndarray]]) -> None:
        try:
            mean, logvar = family.encode_video(vae, torch.stack([video_tensor(frames) for _, _, frames in batch]))
        except Exception as exc:  # a failed batch is retried clip by clip to find the culprit
            if len(batch) > 1:
                for item in batch:
                    encode_batch([item])
            else:
                _fail(batch[0][1], failures, "VAE encode", exc)
            return
        for row, (i, _, _) in enumerate(batch):
            means[i] = mean[row].float().cpu().numpy()
            logvars[i] = logvar[row].float().cpu().numpy()

    pending: list[tuple[int, ClipRecord, np.ndarray]] = []
    clips = tqdm(manifest.clips, desc=f"encode_latents {manifest.relation}", unit="clip", disable=None)
    for i, clip in enumerate(clips):
        if clip.clip_id in failures:
            continue
        try:
            frames = load_clip(fetch_local(clip.video), video.num_frames, video.height, video.width,
                               video.fps, video.aspect, clip.start_seconds)
        except Exception as exc:  # unreadable / too short: recorded, the stage goes on
            _fail(clip, failures, "reading the video", exc)
            continue
        pending.append((i, clip, frames))
        if len(pending) == config.batch_size:
            encode_batch(pending)
            pending = []
        if progress is not None:
            progress(i + 1)
    if pending:
        encode_batch(pending)

    norm = LatentNorm.from_config(vae.config)
    vae_norm = {
        "latents_mean": None if norm.latents_mean is None else list(norm.latents_mean),
        "latents_std": None if norm.latents_std is None else list(norm.latents_std),
        "scaling_factor": norm.scaling_factor,
    }
    group.attrs.update({"vae": vae_norm, "vae_class": type(vae).__name__, "latent_shape": list(shape)})
    return vae_norm


def _fail(clip: ClipRecord, failures: dict[str, str], what: str, exc: Exception) -> None:
    """Record a per-clip failure with its reason (failures are data, not crashes)."""
    failures[clip.clip_id] = f"{what} failed: {type(exc).__name__}: {exc}"
    log.warning("encode_latents: %s: %s", clip.clip_id, failures[clip.clip_id])


def encode_latents(
    manifest: Manifest,
    location: str,
    video: VideoConfig,
    model: BaseModelConfig,
    config: LatentConfig,
    fingerprint: str = "",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The encode_latents stage: write latents.zarr and text.zarr of `manifest` under `location`.

    `location` is a local folder or fsspec URL (the store's temporary location).
    `progress(done)` is called as clips go through the VAE. Returns the summary: clip count,
    encoded/failed counts and the failure reasons.
    """
    from dreamrelation.model.families import resolve_model_dir  # deferred: heavy (diffusers), see the module docstring

    model_dir = str(resolve_model_dir(model))
    failures = {c.clip_id: "no caption: run write_captions first" for c in manifest.clips if not c.caption}
    encode_captions(manifest, location, model_dir, model, config, fingerprint, failures)
    vae_norm = encode_videos(manifest, location, model_dir, video, model, config, failures, progress)

    records = [
        {"clip_id": c.clip_id, "status": "failed" if c.clip_id in failures else "ok",
         "reason": failures.get(c.clip_id, "")}
        for c in manifest.clips
    ]
    summary = {
        "clips": len(records),
        "ok": sum(r["status"] == "ok" for r in records),
        "failed": len(failures),
        "reasons": dict(failures),
    }
    group = zarr.open_group(zarr_location(f"{location}/{LATENTS_STORE}"), mode="r+")
    group.attrs.update(
        {
            **_stage_attrs(manifest, fingerprint, model, model_dir),
            "video": video.model_dump(mode="json"),
            "config": config.model_dump(mode="json"),
            "frames": video.num_frames,
            "height": video.height,
            "width": video.width,
            "vae": vae_norm,
            "clips": records,
            "summary": summary,
        }
    )
    log.info("encode_latents %s: %d ok, %d failed of %d clips", manifest.relation, summary["ok"],
             summary["failed"], summary["clips"])
    return summary


def _stage_attrs(manifest: Manifest, fingerprint: str, model: BaseModelConfig, model_dir: str) -> dict[str, Any]:
    """Attributes both stores of the stage carry: format, stage, relation, fingerprint, model."""
    return {
        "format_version": FORMAT_VERSION,
        "stage": "encode_latents",
        "relation": manifest.relation,
        "fingerprint": fingerprint,
        "model": _model_identity(model, model_dir),
    }


def _model_identity(model: BaseModelConfig, model_dir: str) -> dict[str, Any]:
    return {"family": model.family, "profile": model.profile, "model_dir": model_dir, "tiny_seed": model.tiny_seed,
            "dtype": model.dtype}
