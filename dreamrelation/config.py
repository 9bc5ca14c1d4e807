"""The pipeline config: one pydantic model holding every stage's config (the UI form).

`PipelineConfig()` is the embedded default, the `demo` profile: a synthetic NTU-format dataset
and tiny random models on CPU. `paper_defaults()` is the other base: every stage at the paper's
settings (METHOD.md) and no synthetic data. A YAML file names its base (`base: demo` or
`base: paper`, default demo) and lists only what differs; `load_config` deep-merges the file
and then `key.path=value` overrides onto that base, so a partial section keeps the base's
other fields.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from dreamrelation.configbase import StrictConfig
from dreamrelation.data.captions import CaptionConfig
from dreamrelation.data.folder import FolderListing, list_folder_dataset
from dreamrelation.data.masks import SKELETON_BACKENDS, MaskConfig
from dreamrelation.data.ntu import normalize_relation_id
from dreamrelation.data.relations import (
    Relation,
    RelationError,
    describe_yaml_error,
    get_relation,
    load_relation_table,
)
from dreamrelation.data.select import SelectConfig
from dreamrelation.data.synthetic import SyntheticConfig
from dreamrelation.data.video import VideoConfig
from dreamrelation.evaluation.config import EvalConfig, EvalMethod, StudyConfig, StudyV2Config
from dreamrelation.model.config import FAMILY_TEXT_LENGTH, BaseModelConfig, PretrainConfig, TrainConfig
from dreamrelation.stages.latents import LatentConfig

log = logging.getLogger("dreamrelation.config")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEMO_RELATIONS = ["A058", "A055", "A112"]
DEMO_DATASET = ".dreamrelation/demo/ntu"
WORLD_DEMO_DATASET = ".dreamrelation/world-demo/ntu"  # configs/world-demo.yaml
#: Dataset roots the synthetic generator may create: the demos' own (any other must exist, empty).
GENERATED_DATASETS = (DEMO_DATASET, WORLD_DEMO_DATASET)


class ConfigError(ValueError):
    """A preset or config file that cannot be loaded; the message names it."""


def _demo_video() -> VideoConfig:
    return VideoConfig(num_frames=25, height=96, width=160, fps=30.0, aspect=160 / 96)


class PipelineConfig(StrictConfig):
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
        default_factory=lambda: SelectConfig(dataset_root=DEMO_DATASET, clips_per_relation=4), description="Clip selection"
    )
    captions: CaptionConfig = Field(default_factory=CaptionConfig, description="Captions and sidecar files")
    model: BaseModelConfig = Field(default_factory=BaseModelConfig.demo, description="Base model (Mochi-1 or tiny demo)")
    latents: LatentConfig = Field(default_factory=LatentConfig, description="VAE/T5 latent precompute")
    masks: MaskConfig = Field(default_factory=lambda: MaskConfig(backend="skeleton-box"), description="Subject masks")
    train: TrainConfig = Field(default_factory=TrainConfig.demo, description="Training")
    evaluate: EvalConfig = Field(
        # FVD reference set of the demo: the synthetic dataset's own videos.
        default_factory=lambda: EvalConfig.demo(reference_videos_dir=f"{DEMO_DATASET}/nturgb+d_rgb"),
        description="Evaluation",
    )

    @model_validator(mode="after")
    def _masks_fit_the_source(self) -> PipelineConfig:
        """Skeleton backends need NTU skeletons; provided masks exist only in folder datasets (checked at selection)."""
        if self.select.source == "folder" and self.masks.backend in SKELETON_BACKENDS:
            raise ValueError(
                f"masks.backend={self.masks.backend} needs NTU .skeleton files, which a folder dataset "
                "(select.source=folder) does not have: use masks.backend=provided (your own masks) or grounded-sam2"
            )
        if self.select.source == "ntu" and self.masks.backend == "provided":
            raise ValueError("masks.backend=provided reads <clip>.masks.npz beside folder-dataset videos: "
                             "set select.source=folder, or use a skeleton or grounded-sam2 backend for NTU")
        if self.select.source == "folder" and self.synthetic is not None:
            raise ValueError("synthetic generates an NTU-format dataset: set synthetic=null with select.source=folder")
        if self.select.source == "ntu" and self.select.require_masks:
            raise ValueError("select.require_masks checks a folder dataset's own masks (<clip>.masks.npz): "
                             "NTU clips have none; set it with select.source=folder")
        if self.masks.backend == "provided" and not self.select.require_masks:
            # selection checks every clip's masks, so a clip whose masks do not fit is replaced there
            self.select = self.select.model_copy(update={"require_masks": True})
        return self

    @model_validator(mode="after")
    def _trained_methods_train(self) -> PipelineConfig:
        """Every 'trained' evaluation method's overrides give a valid training config, checked now, not at its turn."""
        for index, method in enumerate(self.evaluate.methods):
            if method.source == "trained":
                try:
                    self.method_train(method)
                except ValidationError as exc:
                    raise ValueError(f"evaluate.methods[{index}] ({method.name}).train: "
                                     f"{describe_errors(exc).removeprefix('config: ')}") from None
        return self

    def method_train(self, method: EvalMethod) -> TrainConfig:
        """The training of a 'trained' evaluation method: `train` with its overrides (a baseline, an ablation)."""
        return TrainConfig.model_validate(_merge(self.train.model_dump(mode="json"), method.train))

    @property
    def trained_methods(self) -> list[EvalMethod]:
        """The evaluation methods whose LoRA the train_relation stage trains beside the relation's own."""
        return [method for method in self.evaluate.methods if method.source == "trained"]

    @model_validator(mode="after")
    def _clips_and_text_fit_the_family(self) -> PipelineConfig:
        """Clips, samples and text features follow the base family (METHOD.md §1, §9): its VAE's T_c and the
        text length its pipeline encodes prompts to (on Wan, whose padding is unmasked zeros, the length changes the output)."""
        family, factor = self.model.family, self.model.temporal_compression
        if self.video.temporal_compression != factor:
            raise ValueError(
                f"model.family={family} compresses time by {factor}, but video.temporal_compression is "
                f"{self.video.temporal_compression}: set video.temporal_compression={factor} and video.num_frames "
                f"to {factor}k+1 (e.g. {factor * 20 + 1})"
            )
        for where, sample in (("train.sample", self.train.sample), ("evaluate.sample", self.evaluate.sample)):
            if (sample.frames - 1) % factor:
                raise ValueError(f"{where}.frames={sample.frames}: model.family={family} generates {factor}k+1 frames")
        if self.latents.max_text_length != FAMILY_TEXT_LENGTH[family]:
            raise ValueError(
                f"latents.max_text_length={self.latents.max_text_length}: the model.family={family} pipeline encodes "
                f"prompts to {FAMILY_TEXT_LENGTH[family]} tokens, and training features must be made the same way"
            )
        return self

    @model_validator(mode="after")
    def _real_runs_need_real_mask_models(self) -> PipelineConfig:
        """Tiny random segmenters are for the demo only: a real run must name its model folders."""
        if self.model.profile != "demo" and self.masks.backend not in ("skeleton-box", "provided"):
            missing = ["masks.segmenter_dir"] if self.masks.segmenter_dir is None else []
            if self.masks.backend == "grounded-sam2" and self.masks.detector_dir is None:
                missing.append("masks.detector_dir")
            if missing:
                raise ValueError(
                    f"masks.backend={self.masks.backend} with model.profile={self.model.profile} needs "
                    f"{' and '.join(missing)} (local transformers checkpoints), or masks.backend=skeleton-box"
                )
        return self


def relation_table(config: PipelineConfig, listing: FolderListing | None = None) -> dict[str, Relation]:
    """The relations `config` can run, updated by its relations_file.

    NTU source: the 26 two-person actions. Folder source: one relation per folder of videos under
    select.dataset_root (id: the folder name's slug; caption template: its relations_file row, if any),
    from `listing` when the caller has already listed the root.
    """
    if config.select.source == "ntu":
        return load_relation_table(config.relations_file)
    listing = listing or list_folder_dataset(config.select.dataset_root)
    for folder, reason in listing.invalid.items():
        log.warning("dataset folder %r is not used: %s", folder, reason)
    folders = {r.id: Relation(r.id, r.name, "") for r in listing.relations.values()}
    return load_relation_table(config.relations_file, base=folders)


#: The relations value meaning every relation of a config (the 26 NTU actions, or a folder dataset's folders).
ALL = "all"


def relations_to_run(config: PipelineConfig, relations: list[str]) -> list[str]:
    """Relation ids from user spellings ('58', 'Fist Bump'); `["all"]` means every relation of `config`.

    Raises RelationError for an unknown relation and ValueError for one listed twice.
    """
    listing = list_folder_dataset(config.select.dataset_root) if config.select.source == "folder" else None
    table = relation_table(config, listing)
    if relations == [ALL]:
        return list(table)
    if listing is not None:
        for relation in relations:
            why = None if normalize_relation_id(relation) in table else listing.why_not_a_relation(relation)
            if why:
                raise RelationError(f"relation {relation!r}: {why}")
    ids = [get_relation(relation, table).id for relation in relations]
    repeated = sorted({r for r in ids if ids.count(r) > 1})
    if repeated:
        raise ValueError(f"relations listed twice: {', '.join(repeated)}")
    return ids


def paper_defaults() -> dict[str, Any]:
    """The real-use base: every sub-config at its class defaults (the paper's settings)."""
    return {
        "root": "./artifacts",
        "synthetic": None,
        "video": VideoConfig().model_dump(mode="json"),
        "select": SelectConfig().model_dump(mode="json"),
        "captions": CaptionConfig().model_dump(mode="json"),
        "model": BaseModelConfig(profile="mochi-1").model_dump(mode="json"),
        "latents": LatentConfig().model_dump(mode="json"),
        "masks": MaskConfig().model_dump(mode="json"),
        "train": TrainConfig().model_dump(mode="json"),
        "evaluate": EvalConfig().model_dump(mode="json"),
    }


BASES = {"demo": lambda: PipelineConfig().model_dump(mode="json"), "paper": paper_defaults}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def read_config_data(source: str | Path | None, overrides: list[str] | None) -> dict[str, Any]:
    """The mapping a preset name / YAML file holds, with `a.b=value` overrides (YAML values) applied."""
    data: dict[str, Any] = {}
    if source is not None:
        path = Path(source)
        if not path.exists() and (CONFIG_DIR / f"{source}.yaml").is_file():  # a preset name (may hold dots)
            path = CONFIG_DIR / f"{source}.yaml"
        if not path.is_file():
            presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise ConfigError(f"config {source!r} not found: give a YAML file or a preset ({presets})")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {describe_yaml_error(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path}: expected a mapping at the top level")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value, e.g. train.steps=100")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"-s {item}: the value is not valid YAML: {describe_yaml_error(exc)}") from None
        _set_path(data, key.strip(), parsed)
    return data


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a preset name (`demo`, `mochi-1`) or YAML path, then apply `a.b=value` overrides (YAML values).

    Overrides may also set `base=paper` when no file is given.
    """
    data = read_config_data(source, overrides)
    base_name = data.pop("base", "demo")
    if base_name not in BASES:
        raise ConfigError(f"config {source}: base must be one of {', '.join(BASES)}, got {base_name!r}")
    try:
        return PipelineConfig.model_validate(_merge(BASES[base_name](), data))
    except ValidationError as exc:
        raise ConfigError(f"invalid config {source or '(defaults)'}: {describe_errors(exc)}") from None


class ToyConfig(StrictConfig):
    """The relational toy world's stages (issue 13): the toy base model and the study on it."""

    root: str = Field(".dreamrelation/toy", description="Artifact root of the toy base and the study (folder or URL).")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="The toy base model and its gates.")
    study: StudyConfig = Field(default_factory=StudyConfig, description="The method comparison on the toy base (world v1).")
    study_v2: StudyV2Config = Field(
        default_factory=StudyV2Config,
        description="The study, round two (issue 21), run instead of `study` when the world is version 2.",
    )

    @model_validator(mode="after")
    def _targets_unseen(self) -> ToyConfig:
        study_name, study = ("study_v2", self.study_v2) if self.pretrain.world.version == 2 else ("study", self.study)
        seen = [r for r in study.relations if r not in self.pretrain.held_out_relations]
        if seen:
            raise ValueError(
                f"{study_name}.relations {seen} are not in pretrain.held_out_relations "
                f"{self.pretrain.held_out_relations}: the study's targets must be relations the base never saw"
            )
        world, sample = self.pretrain.world, study.sample
        if (sample.frames, sample.height, sample.width) != (world.frames, world.height, world.width):
            raise ValueError(
                f"{study_name}.sample makes {sample.frames}x{sample.height}x{sample.width} videos but the world's "
                f"clips are {world.frames}x{world.height}x{world.width}: set its frames/height/width to match"
            )
        return self

    def quick(self) -> ToyConfig:
        """`--quick`: one relation, one seed, 8 prompts (same training and sampling settings); round two:
        two seeds, DreamRelation, direct LoRA and the base, 6 prompts per set."""
        study = self.study.model_copy(update={"relations": self.study.relations[:1], "seeds": self.study.seeds[:1],
                                              "prompts": min(self.study.prompts, 8)})
        v2 = self.study_v2
        study_v2 = v2.model_copy(update={
            "seeds": v2.seeds[:2], "prompts": min(v2.prompts, 6),
            "checkpoint_prompts": min(v2.checkpoint_prompts, 6),
            "methods": [m for m in v2.methods if m in ("dreamrelation", "direct_lora", "base")]})
        return self.model_copy(update={"study": study, "study_v2": study_v2})


def load_toy_config(source: str | Path | None = None, overrides: list[str] | None = None) -> ToyConfig:
    """`ToyConfig` from a YAML file (optional) and `a.b=value` overrides."""
    try:  # merged onto the defaults, so `-s study.train.steps=900` keeps the study's other training settings
        return ToyConfig.model_validate(_merge(ToyConfig().model_dump(mode="json"), read_config_data(source, overrides)))
    except ValidationError as exc:
        raise ConfigError(f"invalid toy config {source or '(defaults)'}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """One `field.path: message` clause per pydantic error, without pydantic's URLs."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "config"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
