"""Configuration of the `evaluate` stage (METHOD.md §6): methods, prompts, seeds, metric models.

`EvalConfig` holds what is generated (methods x prompts x seeds, sampled with `SampleConfig`)
and how it is scored (the metric-model configs of `perception.config`). Nothing is downloaded;
the demo preset points at tiny metric models built on first use under the models cache.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.world import BODIES, SCALES, SCENES, WorldConfig, world_v2
from dreamrelation.model.config import LoraTripletConfig, SampleConfig, TrainConfig, toy_sample_config
from dreamrelation.perception.config import ClipMetricConfig, FVDConfig, VLMConfig


class EvaluationError(ValueError):
    """The evaluation cannot run as configured (missing prompts, LoRA, model folder...)."""


#: Bump when the tiny metric-model builders change, so an old cached tiny model is not reused.
TINY_EVAL_VERSION = 1

MethodSource = Literal["relation_lora", "base", "lora_file", "trained"]
RelationJudge = Literal["vlm", "toy"]
#: What the toy-world judge scores per video (issue 13 §3): the relation, both subjects' kind and
#: contrast, a 'person' look the prompt did not ask for, and `joint`: the relation and both
#: subjects as prompted in one video (issue 22; the toy analogue of the paper's VLM question).
JUDGE_METRICS = ("relation_accuracy", "subject_fidelity", "appearance_leakage", "joint")
_SLUG = re.compile(r"[^a-z0-9]+")


def method_slug(name: str) -> str:
    """A folder-safe id of a method name: 'Direct LoRA' -> 'direct-lora'."""
    return _SLUG.sub("-", name.lower()).strip("-")


class EvalMethod(StrictConfig):
    """One row of the results table (paper Table 1): which weights generate the videos."""

    added_later: ClassVar[dict[str, Any]] = {"train": {}}

    name: str = Field(description="Row label in the report, e.g. 'DreamRelation', 'Mochi (base)', 'Direct LoRA'.")
    source: MethodSource = Field(
        default="relation_lora",
        description="'relation_lora': the inference LoRA this pipeline trained for the relation; "
        "'base': the base model without any LoRA; 'lora_file': another inference LoRA given by lora_path "
        "(direct-LoRA baseline, ablation runs); 'trained': a LoRA the pipeline trains for the relation "
        "beside its own, with the `train` overrides.",
    )
    lora_path: str | None = Field(
        default=None,
        description="For 'lora_file': an inference LoRA (.safetensors) or a training run folder holding "
        "relation_lora.safetensors; '{relation}' is replaced by the relation id.",
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="For 'trained': overrides of the pipeline's `train` settings, e.g. the direct-LoRA baseline "
        "{lora: {mode: direct}, hmt: false, rcl: false}; the train_relation stage trains it, keyed like its own run.",
    )

    @model_validator(mode="after")
    def _path_matches_source(self) -> EvalMethod:
        if not method_slug(self.name):
            raise ValueError(f"method name {self.name!r} needs at least one letter or digit")
        if self.source == "lora_file" and not self.lora_path:
            raise ValueError(f"method {self.name!r}: source 'lora_file' needs lora_path")
        if self.source != "lora_file" and self.lora_path:
            raise ValueError(f"method {self.name!r}: lora_path is only used with source 'lora_file'")
        if self.source != "trained" and self.train:
            raise ValueError(f"method {self.name!r}: train overrides are only used with source 'trained'")
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

    added_later: ClassVar[dict[str, Any]] = {"relation_judge": "vlm"}

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
    vlm: VLMConfig | None = Field(
        default=None, description="Relation accuracy with relation_judge 'vlm'; None skips it. Unused with 'toy'."
    )
    relation_judge: RelationJudge = Field(
        default="vlm",
        description="Who scores relation accuracy (issue 13 §3). 'vlm': the vision-language model of `vlm`. "
        "'toy': the toy-world judge (perception/judge.py) reads every video against the relation and "
        "subjects of its world-style prompt ('A dark red triangle is pushing a light blue dog.'), and "
        "adds subject fidelity and appearance leakage; no VLM is loaded.",
    )
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


# --------------------------------------------------------------------------- the toy-world study (issue 13 §4)

STUDY_METHODS = ("dreamrelation", "direct_lora", "base", "no_hmt", "no_rcl")
STUDY_METRICS = ("relation_accuracy", "subject_fidelity", "appearance_leakage")  # round one's columns


def study_train_config() -> TrainConfig:
    """The one training setting every method uses (fixed before comparing; tiny DiT, batch 1)."""
    return TrainConfig(
        steps=300, min_clips=4, lr=1e-3, warmup_steps=20, checkpoint_every=100, keep_last=1, sample_every=0,
        gradient_checkpointing=False, lora=LoraTripletConfig(rank=8, alpha=8),
    )


class StudyConfig(StrictConfig):
    """What the study compares and how (issue 13 §4)."""

    relations: list[str] = Field(default=["push", "orbit"], description="Target relations (unseen by the base).")
    methods: list[str] = Field(default=list(STUDY_METHODS), description=f"Methods to compare, from {', '.join(STUDY_METHODS)}.")
    seeds: list[int] = Field(default=[0, 1, 2], description="Training (and sampling) seeds per method.")
    exemplars: int = Field(default=20, ge=1, description="Exemplar clips of people per relation.")
    prompts: int = Field(default=20, ge=1, description="Held-out prompts with non-person subjects per relation.")
    train: TrainConfig = Field(default_factory=study_train_config, description="Training, the same for every method.")
    sample: SampleConfig = Field(
        default_factory=lambda: toy_sample_config(WorldConfig()), description="Sampling of the prompts."
    )
    strip_prompts: int = Field(default=2, ge=0, description="Prompts shown as frame strips per method.")
    seed: int = Field(default=0, description="Seed of the exemplar and prompt draws.")

    @model_validator(mode="after")
    def _known(self) -> StudyConfig:
        unknown = [m for m in self.methods if m not in STUDY_METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; methods are {', '.join(STUDY_METHODS)}")
        return self


# --------------------------------------------------------------------------- the study, round two (issue 21 §4)

#: Round two's methods: round one's, the mask weight lambda_m at 0 and 5 (50 is DreamRelation's),
#: and idle adapters that keep AdamW's momentum and weight decay (the authors' code).
STUDY_V2_METHODS = ("dreamrelation", "direct_lora", "base", "no_hmt", "no_rcl", "lambda_m_0", "lambda_m_5",
                    "idle_decay")


def study_v2_train_config() -> TrainConfig:
    """Round two's training, the same for every method (fixed before comparing): round one's, longer."""
    return study_train_config().model_copy(update={"steps": 600, "checkpoint_every": 100})


class StudyV2Config(StrictConfig):
    """The study, round two (issue 21 §4): fixed before any method is compared.

    (`fit_prompts` came after the first run, for the learnability check; off by default.
    `primary_set` and `hmt_pairing` came with round three, docs/study.md R9: at their defaults the
    study is round two's.)

    Exemplars are all in one scene, with one body and one scale; the caption names the body only.
    P1 prompts name another scene, body and scale; P2 prompts name another body only (the base
    rate of drifting into the exemplars' scene). Every method is judged at each of `eval_steps`.
    """

    added_later: ClassVar[dict[str, Any]] = {"primary_set": "P1", "hmt_pairing": "last_step"}

    relations: list[str] = Field(
        default=["loom"], description="Target relations (unseen by the base). Loom alone fits the 60-minute budget; "
        "push is held out of the base too and can be added (about twice the time).")
    methods: list[str] = Field(default=list(STUDY_V2_METHODS),
                               description=f"Methods to compare, from {', '.join(STUDY_V2_METHODS)}.")
    seeds: list[int] = Field(default=[0, 1, 2, 3, 4], min_length=1, description="Training (and sampling) seeds.")
    exemplars: int = Field(default=20, ge=1, description="Exemplar clips per relation.")
    exemplar_scene: str = Field(default="checkerboard", description="The one scene of every exemplar.")
    exemplar_body: str = Field(default="tall", description="The body of both subjects of every exemplar.")
    exemplar_scale: str = Field(default="big", description="The scale of every exemplar.")
    prompts: int = Field(default=20, ge=1, description="Prompts per set (P1, P2) and relation at the last step.")
    fit_prompts: int = Field(
        default=0, ge=0, description="P0: prompts drawn like the exemplars (their scene, body and scale; captions "
        "name the body), judged at every eval step: does the method learn the relation at all? 0: no P0 (round "
        "two's first run).")
    checkpoint_prompts: int = Field(
        default=10, ge=1, description="Prompts of the primary set judged at the steps before the last (the curve's "
        "earlier points).")
    primary_set: Literal["P1", "P2"] = Field(
        default="P1", description="The prompt set that the leak probe, the curves, the front plot and the verdicts "
        "read. P1 names another scene, body and scale (round two); P2 names the bodies only, so a leaked scene is "
        "one the prompt never asked about (round three, docs/study.md R9).")
    hmt_pairing: Literal["last_step", "matched_accuracy"] = Field(
        default="last_step", description="How the HMT claim pairs DreamRelation with direct LoRA and without-HMT. "
        "last_step: both at the run's end (round two). matched_accuracy: at the pair of eval steps whose mean "
        "relation accuracies (primary set) are closest, so leakage is compared where the methods have learnt "
        "about as much (round three; needs checkpoint_prompts = prompts).")
    eval_steps: list[int] = Field(default=[100, 200, 400, 600], min_length=1,
                                  description="Training steps at which every method is judged; the last is the run's end.")
    train: TrainConfig = Field(default_factory=study_v2_train_config, description="Training, the same for every method.")
    sample: SampleConfig = Field(
        default_factory=lambda: toy_sample_config(world_v2(), steps=16), description="Sampling of the prompts."
    )
    probe_margin: float = Field(
        default=0.3, description="Leak probe: direct LoRA's P1 scene leak must exceed the base's by this, or the "
        "study stops before comparing methods (the world would have nothing to decouple)."
    )
    resamples: int = Field(default=2000, ge=100, description="Bootstrap resamples of every confidence interval.")
    strip_prompts: int = Field(default=2, ge=0, description="P1 prompts kept as frame strips per method.")
    workers: int = Field(default=2, ge=1, description="Runs trained and judged at once, one process and one torch "
                         "thread each (the numbers do not depend on it).")
    seed: int = Field(default=0, description="Seed of the exemplar and prompt draws and of the bootstrap.")

    @model_validator(mode="after")
    def _consistent(self) -> StudyV2Config:
        unknown = [m for m in self.methods if m not in STUDY_V2_METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; methods are {', '.join(STUDY_V2_METHODS)}")
        for name, value, known in (("exemplar_scene", self.exemplar_scene, SCENES),
                                   ("exemplar_body", self.exemplar_body, BODIES),
                                   ("exemplar_scale", self.exemplar_scale, SCALES)):
            if value not in known:
                raise ValueError(f"{name}: unknown {value!r}; choose from {', '.join(known)}")
        if sorted(set(self.eval_steps)) != self.eval_steps or self.eval_steps[-1] != self.train.steps:
            raise ValueError(f"eval_steps {self.eval_steps} must increase and end at train.steps ({self.train.steps})")
        if self.hmt_pairing == "matched_accuracy" and self.checkpoint_prompts != self.prompts:
            raise ValueError(f"hmt_pairing matched_accuracy pairs videos across eval steps, so every step must judge "
                             f"the same prompts: set checkpoint_prompts ({self.checkpoint_prompts}) to prompts "
                             f"({self.prompts})")
        return self
