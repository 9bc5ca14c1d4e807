"""The base-model families by name, and the model folder a config asks for (METHOD.md §1, §9)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dreamrelation.model.config import BaseModelConfig
from dreamrelation.model.family import ModelFamily, ModelFolderError, missing_components
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.wan import WAN

log = logging.getLogger("dreamrelation.model")

FAMILIES: dict[str, ModelFamily] = {family.name: family for family in (MOCHI, WAN)}


def family_of(cfg: BaseModelConfig) -> ModelFamily:
    """The family `model.family` names."""
    return FAMILIES[cfg.family]


def family_of_model(transformer: torch.nn.Module) -> ModelFamily:
    """The family a loaded transformer belongs to (by its class; a peft-wrapped model keeps its class)."""
    for family in FAMILIES.values():
        if isinstance(transformer, family.transformer_class):
            return family
    names = ", ".join(f.transformer_class.__name__ for f in FAMILIES.values())
    raise TypeError(f"{type(transformer).__name__} is not the transformer of a known base model ({names})")


def hub_repo(cfg: BaseModelConfig) -> str:
    """The repository `allow_download` fetches: `model.hub_repo`, else the family's."""
    return cfg.hub_repo or family_of(cfg).hub_repo


def weights_dir(cfg: BaseModelConfig) -> Path:
    """Where a real-weights run reads its model: `model.model_dir`, else the repository's name under the models cache."""
    return Path(cfg.model_dir) if cfg.model_dir else Path(cfg.models_cache) / hub_repo(cfg).split("/")[-1]


def resolve_model_dir(cfg: BaseModelConfig) -> Path:
    """The local model folder for `cfg`: the family's tiny model (built on first use) or the given folder."""
    family = family_of(cfg)
    if cfg.profile == "demo" and cfg.model_dir is None:
        return family.ensure_tiny(family.tiny_dir(cfg.models_cache, cfg.tiny_seed), cfg.tiny_seed)
    if cfg.profile == "demo":  # a user-named folder is read, never built into or replaced
        folder = family.check_model_dir(cfg.model_dir)
        log.warning(
            "model.profile is 'demo' but model.model_dir=%s is set: using the model in that folder with "
            "the demo's settings (for %s weights and their settings use -c %s)",
            folder, family.title, family.preset,
        )
        return folder
    repo, folder = hub_repo(cfg), weights_dir(cfg)
    if missing_components(folder) and cfg.allow_download:
        from huggingface_hub import snapshot_download  # deferred: only when a download is allowed

        log.info("downloading %s to %s (allow_download is set)", repo, folder)
        snapshot_download(repo, local_dir=folder)
    if cfg.model_dir is None and missing_components(folder):
        raise ModelFolderError(
            f"profile '{cfg.profile}' needs model_dir: a local folder with {repo} in the diffusers layout "
            f"(`huggingface-cli download {repo} --local-dir <folder>`)."
        )
    return family.check_model_dir(folder)
