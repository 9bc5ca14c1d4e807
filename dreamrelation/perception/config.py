"""Configuration of the metric models (METHOD.md §6): CLIP, the I3D of FVD, the VLM judge.

Every model is read from a local path; nothing is downloaded. The metric code in
`perception.metrics` and `perception.vlm` takes these configs (or plain arguments); the
evaluation layer's `EvalConfig` holds one of each.
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dreamrelation.configbase import StrictConfig

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
