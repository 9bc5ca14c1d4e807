"""The train_relation stage's inputs: the encode_latents and make_masks artifacts as TrainClips (METHOD.md §1, §3).

A clip trains only when both stages succeeded for it: clips that failed encoding, or whose
masks were skipped (fewer than two subjects) or failed, are left out with a warning naming
the reason, kept in the stage summary (`left_out`) and listed under the CLI's final table.
Shapes are checked: the latent masks (f, 3, h, w) must sit on the latent grid of the VAE
posterior (12, f, h, w), i.e. both stages must have used the same `VideoConfig`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zarr

from dreamrelation.data.masks import MASKS_STORE
from dreamrelation.data.store import zarr_location
from dreamrelation.model.family import LatentNorm
from dreamrelation.model.train import TrainClip
from dreamrelation.stages.latents import LATENTS_STORE, TEXT_STORE

log = logging.getLogger("dreamrelation.training_data")


@dataclass
class TrainingData:
    """Everything `model.train.train` needs from the precompute stages."""

    clips: list[TrainClip]
    empty_text: tuple[torch.Tensor, torch.Tensor]  # (L, D) features and (L,) mask of the prompt ""
    vae_norm: LatentNorm
    left_out: dict[str, str] = field(default_factory=dict)  # clip id -> why it is not trained on


def _open(location: str, name: str) -> zarr.Group:
    return zarr.open_group(zarr_location(f"{location}/{name}"), mode="r")


def _statuses(group: zarr.Group) -> dict[str, tuple[int, str, str]]:
    """clip id -> (row, status, reason) from a store's `clips` records."""
    return {r["clip_id"]: (row, r["status"], r["reason"]) for row, r in enumerate(group.attrs["clips"])}


class TooFewClipsError(ValueError):
    """Fewer usable training clips than `train.min_clips`; the message lists the left-out ones."""


def load_training_clips(latents_location: str, masks_location: str, min_clips: int = 1) -> TrainingData:
    """TrainClips of every clip with latents, text features and masks; the others are logged and left out.

    `latents_location` is an encode_latents artifact (folder or URL holding latents.zarr and
    text.zarr), `masks_location` a make_masks artifact (holding masks.zarr). Fewer than
    `min_clips` usable clips raise `TooFewClipsError` naming every left-out clip and its reason.
    """
    latents, text, masks = _open(latents_location, LATENTS_STORE), _open(latents_location, TEXT_STORE), _open(
        masks_location, MASKS_STORE
    )
    latent_status, mask_status = _statuses(latents), _statuses(masks)
    text_rows = {clip_id: row for row, clip_id in enumerate(text.attrs["clip_ids"])}
    _check_grids(latents.attrs, masks)

    clips: list[TrainClip] = []
    left_out: dict[str, str] = {}
    for clip_id, (row, status, reason) in latent_status.items():
        if status != "ok":
            left_out[clip_id] = f"latents {status}: {reason}"
        elif clip_id not in mask_status:
            left_out[clip_id] = "no masks for this clip (masks made from another manifest?)"
        elif mask_status[clip_id][1] != "ok":
            left_out[clip_id] = f"masks {mask_status[clip_id][1]}: {mask_status[clip_id][2]}"
        if clip_id in left_out:
            log.warning("training data: leaving out %s (%s)", clip_id, left_out[clip_id])
            continue
        text_row, mask_row = text_rows[clip_id], mask_status[clip_id][0]
        clips.append(
            TrainClip(
                clip_id=clip_id,
                latent_mean=torch.from_numpy(np.asarray(latents["mean"][row])),
                latent_logvar=torch.from_numpy(np.asarray(latents["logvar"][row])),
                text_embeds=torch.from_numpy(np.asarray(text["embeds"][text_row])),
                text_mask=torch.from_numpy(np.asarray(text["mask"][text_row])),
                latent_masks=torch.from_numpy(np.asarray(masks["latent"][mask_row])),
            )
        )
    if len(clips) < min_clips:
        why = "; ".join(f"{clip_id}: {reason}" for clip_id, reason in left_out.items()) or "none left out"
        raise TooFewClipsError(
            f"only {len(clips)} usable training clip(s), train.min_clips is {min_clips}. Left out: {why}. "
            "Select more clips (select.clips_per_relation), fix the inputs, or lower train.min_clips"
        )
    empty_text = (torch.from_numpy(np.asarray(text["empty_embeds"][...])),
                  torch.from_numpy(np.asarray(text["empty_mask"][...])))
    log.info("training data: %d clip(s), %d left out", len(clips), len(left_out))
    return TrainingData(clips, empty_text, LatentNorm.from_config(latents.attrs["vae"]), left_out)


def _check_grids(latent_attrs: Any, masks: zarr.Group) -> None:
    """Raise if the masks are not on the latents' (f, h, w) grid (different VideoConfig)."""
    _, f, h, w = latent_attrs["latent_shape"]
    _, mf, _, mh, mw = masks["latent"].shape
    if (mf, mh, mw) != (f, h, w):
        raise ValueError(
            f"latent masks are on a {mf}x{mh}x{mw} grid but the latents are {f}x{h}x{w}: "
            "encode_latents and make_masks ran with different video settings"
        )
