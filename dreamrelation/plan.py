"""Artifact keys of every stage of one relation, derived from the config alone (DESIGN.md).

Each stage's fingerprint hashes its own config, the fingerprints of the stages it reads and a
per-stage code version, so any stage can be rerun alone (on another machine, from a URL):
the keys of its inputs are recomputed from the same config, never passed in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from dreamrelation.config import PipelineConfig, ToyConfig, relation_table
from dreamrelation.data.folder import folder_digest, list_folder_dataset
from dreamrelation.data.ntu import normalize_relation_id
from dreamrelation.data.relations import Relation
from dreamrelation.data.store import fingerprint

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
}
#: The "relation" the toy-world stages report under (events, artifact keys).
TOY = "toy-world"


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

    def stage(name: str, stage_config: object, inputs: list[str], key: str) -> StageArtifact:
        fps[name] = fingerprint(name, stage_config, [relation, *inputs], CODE_VERSIONS[name])
        return StageArtifact(name, relation, fps[name], f"{base}/{key.format(fp=fps[name])}")

    select_cfg = {"select": config.select, "video": config.video, "synthetic": config.synthetic}
    # Data the config only names are inputs too. A folder dataset's files and sidecar texts: editing
    # a caption re-selects and re-captions. A relations_file's caption (template) of this relation.
    data, caption = [], []
    listing = list_folder_dataset(config.select.dataset_root) if config.select.source == "folder" else None
    if listing is not None or config.relations_file is not None:
        caption = [relation_table(config, listing).get(relation, Relation(relation, relation, "")).caption]
    if listing is not None:
        data = [folder_digest(config.select.dataset_root, listing.relations.get(relation)), *caption]
    plan = {"select_clips": stage("select_clips", select_cfg, data, "manifest-{fp}.json")}
    plan["write_captions"] = stage(
        "write_captions", config.captions, [fps["select_clips"], *caption], "captions-{fp}"
    )
    plan["encode_latents"] = stage(
        "encode_latents",
        {"latents": config.latents, "model": config.model, "video": config.video},
        [fps["write_captions"]],
        "latents-{fp}",
    )
    plan["make_masks"] = stage(
        "make_masks", {"masks": config.masks, "video": config.video}, [fps["select_clips"]], "masks-{fp}"
    )
    plan["train_relation"] = stage(
        "train_relation",
        {"train": config.train, "model": config.model},
        [fps["encode_latents"], fps["make_masks"]],
        "runs/train-{fp}",
    )
    plan["evaluate"] = stage(
        "evaluate", {"evaluate": config.evaluate, "model": config.model}, [fps["train_relation"]], "runs/eval-{fp}"
    )
    return plan


def plan_toy(config: ToyConfig) -> dict[str, StageArtifact]:
    """Keys of the toy base (`base/toy-<fp>`) and of the study on it (`studies/toy-<fp>`)."""
    base_fp = fingerprint("pretrain_base", config.pretrain, [], CODE_VERSIONS["pretrain_base"])
    study_fp = fingerprint("study", config.study, [base_fp], CODE_VERSIONS["study"])
    return {
        "pretrain_base": StageArtifact("pretrain_base", TOY, base_fp, f"base/toy-{base_fp}"),
        "study": StageArtifact("study", TOY, study_fp, f"studies/toy-{study_fp}"),
    }
