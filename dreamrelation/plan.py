"""Artifact keys of every stage of one relation, derived from the config alone (DESIGN.md).

Each stage's fingerprint hashes its own config, the fingerprints of the stages it reads and a
per-stage code version, so any stage can be rerun alone (on another machine, from a URL):
the keys of its inputs are recomputed from the same config, never passed in memory.

Keys name what a stage reads, not how the config spells it: local paths are hashed resolved
(`key_config`: a relative `select.dataset_root` run from two folders is two datasets), and
the files of a dataset are inputs too (a folder dataset's names, sizes and caption texts, an
NTU dataset's names, sizes and mtimes: `data.listing.relation_digest`), as are the bytes of the
small files a stage reads (windows, captions and prompt files), so a file edited in place
reruns the stages that read it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import fsspec
from pydantic import BaseModel

from dreamrelation.config import PipelineConfig, ToyConfig, relation_table
from dreamrelation.data.folder import folder_digest, list_folder_dataset
from dreamrelation.data.listing import DatasetRootError, list_dataset, relation_digest
from dreamrelation.data.ntu import normalize_relation_id
from dreamrelation.data.relations import Relation
from dreamrelation.data.store import ArtifactStore, fingerprint

STAGES = ("select_clips", "write_captions", "encode_latents", "make_masks", "train_relation", "evaluate")

# Bump a stage's version when its code changes what it writes; old artifacts are then not reused.
CODE_VERSIONS = {
    "select_clips": "1",
    "write_captions": "1",
    "encode_latents": "1",
    "make_masks": "1",
    "train_relation": "1",
    "evaluate": "1",
    "pretrain_base": "1",
    "study": "1",
    "study_v2": "1",
}
#: The "relation" the toy-world stages report under (events, artifact keys).
TOY = "toy-world"
#: Config fields naming local files or folders a stage reads (`evaluate.methods[].lora_path` too).
#: Relative, they name another file from another working directory, so keys hash them resolved.
#: `root` is not among them: keys are relative to it, so another root is another store.
KEY_PATHS = (
    "select.dataset_root",
    "select.windows_file",
    "captions.captions_file",
    "model.model_dir",
    "model.models_cache",
    "masks.detector_dir",
    "masks.segmenter_dir",
    "masks.models_cache",
    "evaluate.prompts_path",
    "evaluate.clip.model_dir",
    "evaluate.fvd.i3d_path",
    "evaluate.fvd.reference_videos_dir",
    "evaluate.vlm.model_dir",
)


@dataclass(frozen=True)
class StageArtifact:
    """Where one stage of one relation writes, and the fingerprint that names it."""

    stage: str
    relation: str
    fingerprint: str
    key: str


def plan_relation(relation: str, config: PipelineConfig) -> dict[str, StageArtifact]:
    """Keys of all six stages of `relation` under `config`, in DAG order ('58' means 'A058')."""
    relation = normalize_relation_id(relation)
    base = f"relations/{relation}"
    fps: dict[str, str] = {}
    keyed = key_config(config)

    def stage(name: str, stage_config: object, inputs: list[str], key: str, label: str | None = None) -> StageArtifact:
        label = label or name
        fps[label] = fingerprint(name, stage_config, [relation, *inputs], CODE_VERSIONS[name])
        return StageArtifact(name, relation, fps[label], f"{base}/{key.format(fp=fps[label])}")

    select_cfg = {"select": keyed.select, "video": config.video, "synthetic": config.synthetic}
    # Data the config only names are inputs too. A folder dataset's files and sidecar texts: editing
    # a caption re-selects and re-captions. A relations_file's caption (template) of this relation.
    # An NTU dataset's files (a generated one is named by its `synthetic` config).
    data, caption = [], []
    listing = list_folder_dataset(config.select.dataset_root) if config.select.source == "folder" else None
    if listing is not None or config.relations_file is not None:
        caption = [relation_table(config, listing).get(relation, Relation(relation, relation, "")).caption]
    if listing is not None:
        data = [folder_digest(config.select.dataset_root, listing.relations.get(relation)), *caption]
    elif config.synthetic is None:
        data = [ntu_digest(relation, config)]
    data += file_digest(config.select.windows_file)
    plan = {"select_clips": stage("select_clips", select_cfg, data, "manifest-{fp}.json")}
    plan["write_captions"] = stage(
        "write_captions",
        keyed.captions,
        [fps["select_clips"], *caption, *file_digest(config.captions.captions_file)],
        "captions-{fp}",
    )
    plan["encode_latents"] = stage(
        "encode_latents",
        {"latents": config.latents, "model": keyed.model, "video": config.video},
        [fps["write_captions"]],
        "latents-{fp}",
    )
    plan["make_masks"] = stage(
        "make_masks", {"masks": keyed.masks, "video": config.video}, [fps["select_clips"]], "masks-{fp}"
    )
    plan["train_relation"] = stage(
        "train_relation",
        {"train": config.train, "model": keyed.model},
        [fps["encode_latents"], fps["make_masks"]],
        "runs/train-{fp}",
    )
    trained = [trained_key(method.slug) for method in config.trained_methods]
    for method, label in zip(config.trained_methods, trained):  # a baseline's run is keyed like the relation's own
        plan[label] = stage(
            "train_relation",
            {"train": config.method_train(method), "model": keyed.model},
            [fps["encode_latents"], fps["make_masks"]],
            "runs/train-{fp}",
            label,
        )
    plan["evaluate"] = stage(
        "evaluate",
        {"evaluate": keyed.evaluate, "model": keyed.model},
        [fps["train_relation"], *[fps[label] for label in trained], *file_digest(config.evaluate.prompts_path)],
        "runs/eval-{fp}",
    )
    return plan


def trained_key(method_slug: str) -> str:
    """The plan entry of a 'trained' evaluation method's training run: `train_relation:<slug>`."""
    return f"train_relation:{method_slug}"


def resolve_local(path: str) -> str:
    """A local path made absolute with symlinks resolved (what this process would open); URLs unchanged."""
    return path if "://" in path else os.path.realpath(os.path.expanduser(path))


def key_config(config: PipelineConfig) -> PipelineConfig:
    """`config` with the local paths of KEY_PATHS (and the LoRA files of evaluated methods) resolved, for hashing.

    A copy (the config models are not validated again); `config` itself keeps what the user wrote.
    """
    updates: dict[str, Any] = {}
    for dotted in KEY_PATHS:
        value: Any = config
        for name in dotted.split("."):
            value = getattr(value, name, None)
        resolved = resolve_local(value) if isinstance(value, str) else value
        if resolved != value:
            node = updates
            *parents, leaf = dotted.split(".")
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = resolved
    if any(m.lora_path for m in config.evaluate.methods):
        updates.setdefault("evaluate", {})["methods"] = [
            m.model_copy(update={"lora_path": resolve_local(m.lora_path)}) if m.lora_path else m
            for m in config.evaluate.methods
        ]
    return _updated(config, updates)


def _updated(model: BaseModel, updates: dict[str, Any]) -> Any:
    """A copy of `model` with nested `updates` ({field: value or {subfield: ...}}) applied."""
    if not updates:
        return model
    return model.model_copy(update={
        name: _updated(getattr(model, name), value) if isinstance(value, dict) else value
        for name, value in updates.items()
    })


def ntu_digest(relation: str, config: PipelineConfig) -> str:
    """`relation_digest` of the NTU dataset's files of `relation`, from the listing selection uses.

    The listing is walked once per process (and shared through the artifact root's cache), so
    keys cost a `stat` per file of the relation. A dataset root that does not exist (yet) hashes
    as such; selection then fails naming it.
    """
    try:
        listing = list_dataset(config.select.dataset_root, cache=_listing_cache(config.root))
    except DatasetRootError:
        return "no dataset"
    return relation_digest(listing, relation)


def file_digest(path: str | None) -> list[str]:
    """`[hash of the file's bytes]` of a small user file a stage reads (windows, captions, prompts); [] for None.

    Editing such a file in place reruns the stage that reads it. A file that cannot be read hashes
    as such; the stage (or the preflight check) names it.
    """
    if path is None:
        return []
    try:
        with fsspec.open(path, "rb") as handle:
            return [hashlib.sha256(handle.read()).hexdigest()[:16]]
    except (OSError, ValueError):
        return ["unreadable"]


def _listing_cache(root: str) -> ArtifactStore | None:
    try:
        return ArtifactStore(root)
    except (ImportError, ValueError, OSError):  # a root no stage could use: that stage reports it
        return None


def plan_toy(config: ToyConfig) -> dict[str, StageArtifact]:
    """Keys of the toy base (`base/toy-<fp>`) and of the studies on it (`studies/toy-<fp>`, round two
    `studies/toy-v2-<fp>`)."""
    base_fp = fingerprint("pretrain_base", config.pretrain, [], CODE_VERSIONS["pretrain_base"])
    study_fp = fingerprint("study", config.study, [base_fp], CODE_VERSIONS["study"])
    study_v2_fp = fingerprint("study_v2", config.study_v2, [base_fp], CODE_VERSIONS["study_v2"])
    return {
        "pretrain_base": StageArtifact("pretrain_base", TOY, base_fp, f"base/toy-{base_fp}"),
        "study": StageArtifact("study", TOY, study_fp, f"studies/toy-{study_fp}"),
        "study_v2": StageArtifact("study_v2", TOY, study_v2_fp, f"studies/toy-v2-{study_v2_fp}"),
    }
