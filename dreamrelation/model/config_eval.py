"""Configuration of the evaluation metrics and the Q/K/V analysis (METHOD.md §6, §7).

Every model is read from a local path; nothing is downloaded. The `evaluate` stage takes an
`EvalConfig`; the metric functions in `dreamrelation.model.metrics` and
`dreamrelation.model.vlm` take the sub-configs (or plain arguments).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dreamrelation.model.config import SampleConfig, StrictConfig

#: Placeholders a relation-accuracy question template may use.
QUESTION_FIELDS: frozenset[str] = frozenset({"relation", "prompt"})

DEFAULT_QUESTION_TEMPLATE = (
    "These images are frames of one video, in temporal order. "
    "Do the two subjects in the video perform this interaction: {relation}? "
    "Judge only the interaction, not what the subjects look like. "
    'Answer with a single word, "yes" or "no".'
)


class ClipMetricConfig(StrictConfig):
    """CLIP-T and temporal consistency (METHOD.md §6)."""

    model_dir: str | None = Field(
        default=None,
        description="Local folder of a transformers CLIPModel plus its processor/tokenizer "
        "(ViT-B/32 in real use, e.g. a saved openai/clip-vit-base-patch32). None: metric skipped.",
    )
    device: str = Field(default="cpu", description="Torch device for the CLIP model.")
    batch_size: int = Field(default=32, ge=1, description="Frames per CLIP image forward pass.")


class FVDConfig(StrictConfig):
    """FVD from I3D features (METHOD.md §6).

    The common TorchScript I3D (Kinetics-400) takes float32 (B, 3, T, 224, 224) in [-1, 1],
    T >= 10 (16 is customary), and returns (B, 400) features when called with
    `rescale=False, resize=False, return_features=True`.
    """

    i3d_path: str | None = Field(
        default=None,
        description="Local path of a TorchScript I3D file (e.g. i3d_torchscript.pt). None: FVD skipped.",
    )
    reference_videos_dir: str | None = Field(
        default=None,
        description="Folder of reference videos for FVD (the paper uses 800 AnimalKingdom test videos).",
    )
    num_frames: int = Field(
        default=16, ge=1, description="Frames per video fed to the I3D (16 is the common FVD protocol)."
    )
    min_frames: int = Field(
        default=10,
        ge=1,
        description="Smallest clip length the I3D accepts; inputs shorter than this are rejected.",
    )
    frame_sampling: Literal["first", "uniform"] = Field(
        default="first",
        description="'first': the first num_frames consecutive frames; 'uniform': num_frames "
        "frames spread evenly over the clip.",
    )
    device: str = Field(default="cpu", description="Torch device for the I3D.")
    batch_size: int = Field(default=4, ge=1, description="Videos per I3D forward pass.")

    @model_validator(mode="after")
    def _frames_consistent(self) -> FVDConfig:
        if self.num_frames < self.min_frames:
            raise ValueError(
                f"num_frames={self.num_frames} is below min_frames={self.min_frames}: "
                "the I3D cannot pool clips that short"
            )
        return self


class VLMConfig(StrictConfig):
    """Relation accuracy with a vision-language model (METHOD.md §6)."""

    backend: Literal["openai", "transformers"] = Field(
        default="transformers",
        description="'openai': an OpenAI-compatible chat-completions HTTP API (vLLM, hosted "
        "Qwen-VL, ...); 'transformers': a local image-text-to-text model loaded from model_dir.",
    )
    base_url: str | None = Field(
        default=None,
        description="API base URL, e.g. http://127.0.0.1:8000/v1; '/chat/completions' is appended.",
    )
    model: str | None = Field(default=None, description="Model name sent to the API.")
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="Name of the environment variable holding the API key; None sends no key "
        "(e.g. a local vLLM server). The key itself is never stored in the config.",
    )
    model_dir: str | None = Field(
        default=None, description="Local folder of a transformers VLM (AutoModelForImageTextToText)."
    )
    device: str = Field(default="cpu", description="Torch device for the local VLM.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Weight dtype of the local VLM (bfloat16 for a 7B model on a GPU)."
    )
    question_template: str = Field(
        default=DEFAULT_QUESTION_TEMPLATE,
        description="Question shown with the frames; may use {relation} (relation name) and {prompt} "
        "(the generation prompt).",
    )
    repeats: int = Field(default=10, ge=1, description="How often every video is asked (mean ± std over repeats).")
    num_frames: int = Field(default=8, ge=1, description="Frames sampled evenly from each video for the VLM.")
    max_image_side: int = Field(
        default=512, ge=16, description="Frames sent to the API are downscaled to this longest side."
    )
    temperature: float = Field(
        default=1.0, ge=0.0, description="Sampling temperature; 0 means greedy (repeats then agree)."
    )
    max_new_tokens: int = Field(default=16, ge=1, description="Answer length limit.")
    timeout_s: float = Field(default=120.0, gt=0, description="HTTP timeout per request.")
    max_retries: int = Field(default=3, ge=0, description="Retries of a failed HTTP request (429, 5xx, network).")
    seed: int = Field(default=0, description="Base seed; repeat r uses seed + r.")
    unparseable_policy: Literal["count_as_no", "exclude"] = Field(
        default="count_as_no",
        description="How answers that are neither yes nor no enter the accuracy: as 'no' (the "
        "conservative default) or excluded from the denominator. They are counted either way.",
    )

    @field_validator("question_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        unknown = fields - QUESTION_FIELDS
        if unknown:
            raise ValueError(
                f"question_template uses unknown placeholder(s) {sorted(unknown)}; "
                f"allowed: {sorted(QUESTION_FIELDS)}"
            )
        return value

    @model_validator(mode="after")
    def _backend_complete(self) -> VLMConfig:
        if self.backend == "openai" and (not self.base_url or not self.model):
            raise ValueError("backend 'openai' needs base_url and model")
        if self.backend == "transformers" and not self.model_dir:
            raise ValueError("backend 'transformers' needs model_dir")
        return self


class AnalysisConfig(StrictConfig):
    """Q/K/V subspace similarity (METHOD.md §7)."""

    transformer_dir: str | None = Field(
        default=None,
        description="Folder of a MochiTransformer3DModel (or of a pipeline with a transformer/ subfolder).",
    )
    rank: int = Field(default=16, ge=1, description="r: number of top left singular vectors compared.")
    device: str = Field(default="cpu", description="Torch device for the SVDs.")


#: Bump when the tiny metric-model builders change, so an old cached tiny model is not reused.
TINY_EVAL_VERSION = 1

MethodSource = Literal["relation_lora", "base", "lora_file"]
_SLUG = re.compile(r"[^a-z0-9]+")


def method_slug(name: str) -> str:
    """A folder-safe id of a method name: 'Direct LoRA' -> 'direct-lora'."""
    return _SLUG.sub("-", name.lower()).strip("-")


class EvalMethod(StrictConfig):
    """One row of the results table (paper Table 1): which weights generate the videos."""

    name: str = Field(description="Row label in the report, e.g. 'DreamRelation', 'Mochi (base)', 'Direct LoRA'.")
    source: MethodSource = Field(
        default="relation_lora",
        description="'relation_lora': the inference LoRA this pipeline trained for the relation; "
        "'base': the base model without any LoRA; 'lora_file': another inference LoRA given by lora_path "
        "(direct-LoRA baseline, ablation runs).",
    )
    lora_path: str | None = Field(
        default=None,
        description="For 'lora_file': an inference LoRA (.safetensors) or a training run folder holding "
        "relation_lora.safetensors; '{relation}' is replaced by the relation id.",
    )

    @model_validator(mode="after")
    def _path_matches_source(self) -> EvalMethod:
        if not method_slug(self.name):
            raise ValueError(f"method name {self.name!r} needs at least one letter or digit")
        if self.source == "lora_file" and not self.lora_path:
            raise ValueError(f"method {self.name!r}: source 'lora_file' needs lora_path")
        if self.source != "lora_file" and self.lora_path:
            raise ValueError(f"method {self.name!r}: lora_path is only used with source 'lora_file'")
        return self

    @property
    def slug(self) -> str:
        return method_slug(self.name)


def default_methods() -> list[EvalMethod]:
    """DreamRelation (this relation's LoRA) and the base model, as in the paper's Table 1."""
    return [EvalMethod(name="DreamRelation", source="relation_lora"), EvalMethod(name="Mochi (base)", source="base")]


def tiny_eval_model_paths(models_cache: str | Path, seed: int = 0) -> dict[str, Path]:
    """Where the demo's tiny CLIP, TorchScript I3D stand-in and VLM live under `models_cache`."""
    folder = Path(models_cache)
    tag = f"v{TINY_EVAL_VERSION}-seed{seed}"
    return {
        "clip": folder / f"tiny-clip-{tag}",
        "i3d": folder / f"tiny-i3d-{tag}.pt",
        "vlm": folder / f"tiny-vlm-{tag}",
    }


class EvalConfig(StrictConfig):
    """Settings of the `evaluate` stage (METHOD.md §6): what is generated and how it is scored."""

    methods: list[EvalMethod] = Field(
        default_factory=default_methods,
        description="Methods to evaluate, one table row each (DreamRelation, base model, direct-LoRA "
        "baseline, ablation runs).",
    )
    prompts_path: str | None = Field(
        default=None,
        description="Evaluation prompt file (YAML/JSON); None: the shipped 10 prompts per relation.",
    )
    prompts_per_relation: int | None = Field(
        default=None, ge=1, description="Use only the first N prompts of each relation (None: all)."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="Noise seeds: every prompt is generated once per seed, with the same seeds for every "
        "method (paired comparison). Replaces sample.seed.",
    )
    sample: SampleConfig = Field(
        default_factory=SampleConfig, description="Sampling settings of the evaluation videos (METHOD.md §5)."
    )
    clip: ClipMetricConfig = Field(default_factory=ClipMetricConfig, description="CLIP-T / temporal consistency.")
    fvd: FVDConfig = Field(default_factory=FVDConfig, description="FVD (I3D).")
    vlm: VLMConfig | None = Field(default=None, description="Relation accuracy; None skips it.")
    build_tiny_models: bool = Field(
        default=False,
        description="Demo only: build tiny random metric models (CLIP, I3D stand-in, VLM) at the configured "
        "paths when they are missing. Off: a missing model folder is an error.",
    )

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, value: list[EvalMethod]) -> list[EvalMethod]:
        if not value:
            raise ValueError("at least one method to evaluate is needed")
        slugs = [method.slug for method in value]
        duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
        if duplicates:
            raise ValueError(f"method names must differ after slugging, repeated: {duplicates}")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds repeat: {value}")
        return value

    @classmethod
    def demo(
        cls, models_cache: str | Path = ".dreamrelation/models", seed: int = 0, reference_videos_dir: str | None = None
    ) -> EvalConfig:
        """Tiny CPU preset: 2 prompts, tiny sampling, tiny random CLIP / I3D / VLM built on first use.

        Without `reference_videos_dir` FVD is reported as not computed (the pipeline's demo
        default points it at the synthetic dataset's videos).
        """
        paths = tiny_eval_model_paths(models_cache, seed)
        return cls(
            prompts_per_relation=2,
            sample=SampleConfig.demo(),
            clip=ClipMetricConfig(model_dir=str(paths["clip"]), batch_size=32),
            fvd=FVDConfig(i3d_path=str(paths["i3d"]), reference_videos_dir=reference_videos_dir),
            vlm=VLMConfig(
                backend="transformers",
                model_dir=str(paths["vlm"]),
                repeats=3,
                num_frames=4,
                max_new_tokens=4,
            ),
            build_tiny_models=True,
        )
