"""The pipeline config: one pydantic model holding every stage's config (the UI form).

`PipelineConfig()` is the embedded default, the `demo` profile: a synthetic NTU-format dataset
and tiny random models on CPU. `configs/mochi-1.yaml` is real use. `load_config` reads a preset
name or a YAML file and applies `key.path=value` overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from dreamrelation.data.captions import CaptionConfig
from dreamrelation.data.latents import LatentConfig
from dreamrelation.data.masks import MaskConfig
from dreamrelation.data.select import SelectConfig
from dreamrelation.data.synthetic import SyntheticConfig
from dreamrelation.data.video import VideoConfig
from dreamrelation.model.config import BaseModelConfig, TrainConfig
from dreamrelation.model.config_eval import EvalConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEMO_RELATIONS = ["A058", "A055", "A112"]


class ConfigError(ValueError):
    """A preset or config file that cannot be loaded; the message names it."""


def _demo_video() -> VideoConfig:
    return VideoConfig(num_frames=25, height=96, width=160, fps=30.0, aspect=160 / 96)


class PipelineConfig(BaseModel):
    """Every stage's settings for one relation pipeline run."""

    root: str = Field(
        ".dreamrelation/demo/artifacts",
        description="Artifact root: a local folder or an fsspec URL (s3://bucket/prefix) shared by all workers",
    )
    relations_file: str | None = Field(
        None, description="Optional YAML/CSV adding or overriding relations and their captions"
    )
    synthetic: SyntheticConfig | None = Field(
        default_factory=lambda: SyntheticConfig(relations=DEMO_RELATIONS),
        description="Generate a synthetic NTU-format dataset at select.dataset_root first (demo); null for real data",
    )
    video: VideoConfig = Field(default_factory=_demo_video, description="Target clip format shared by all stages")
    select: SelectConfig = Field(
        default_factory=lambda: SelectConfig(clips_per_relation=4), description="Clip selection"
    )
    captions: CaptionConfig = Field(default_factory=CaptionConfig, description="Captions and sidecar files")
    model: BaseModelConfig = Field(default_factory=BaseModelConfig.demo, description="Base model (Mochi-1 or tiny demo)")
    latents: LatentConfig = Field(default_factory=LatentConfig, description="VAE/T5 latent precompute")
    masks: MaskConfig = Field(default_factory=lambda: MaskConfig(backend="skeleton-box"), description="Subject masks")
    train: TrainConfig = Field(default_factory=TrainConfig.demo, description="Training")
    evaluate: EvalConfig = Field(default_factory=EvalConfig.demo, description="Evaluation")


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a preset name (`demo`, `mochi-1`) or YAML path, then apply `a.b=value` overrides (YAML values)."""
    data: dict[str, Any] = {}
    if source is not None:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{source}.yaml"
        if not path.is_file():
            presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise ConfigError(f"config {source!r} not found: give a YAML file or a preset ({presets})")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: expected a mapping at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. train.steps=100")
        key, value = item.split("=", 1)
        _set_path(data, key.strip(), yaml.safe_load(value))
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {source or '(defaults)'}:\n{exc}") from None
