"""Task of the make_masks stage: subject masks, latent masks and previews of a manifest."""

from __future__ import annotations

from typing import Any

import fsspec
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import PipelineConfig
from dreamrelation.data.manifest import read_manifest
from dreamrelation.data.masks import MaskConfig, read_mask_status
from dreamrelation.data.previews import decode_image, format_sig, image_data_uri, pick_tiles
from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import plan_relation
from dreamrelation.stages.masks import make_masks
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import Progress, artifact_key, cell, markdown_image

#: Clips of one masks table that get a picture, and the byte budget of each picture.
MAX_PREVIEWS = 12
PREVIEW_BYTES = 24_000


@task(name="make-masks", cache_policy=NO_CACHE)
def make_masks_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    """Masks of the selected clips of `relation` (skips if the artifact is complete)."""
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    manifest = read_manifest(store.require(plan["select_clips"].key))
    artifact = plan["make_masks"]

    def build(location: str, summary: dict[str, Any]) -> None:
        with Progress(artifact_key(relation, "make-masks"), len(manifest.clips), "clips masked") as bar:
            summary.update(make_masks(manifest, location, config.video, config.masks, artifact.fingerprint, bar.update))

    result = run_stage(store, artifact, build, force)
    create_markdown_artifact(
        key=artifact_key(relation, "masks"),
        markdown=mask_report(result.uri, config.masks),
        description=f"make_masks {relation}: S1 / S2 per clip, with previews",
    )
    return result


def _preview(uri: str, masks: MaskConfig) -> str:
    """The clip's stored preview PNG as a small first / middle / last JPEG strip in markdown."""
    with fsspec.open(uri, "rb") as handle:
        strip = decode_image(handle.read())
    return markdown_image(image_data_uri(pick_tiles(strip, masks.preview_width), "jpeg", PREVIEW_BYTES), "S1/S2 masks")


def mask_report(uri: str, masks: MaskConfig, max_previews: int = MAX_PREVIEWS) -> str:
    """Markdown table of every clip: status, mask coverage of S1 (left) and S2 (right), preview or reason.

    Subjects are numbered by the rule the stage uses (`data.masks.subject_order`): S1 is the
    left-most person in the first frame that shows both, S2 the other one; the Kinect body
    ids are not shown. At most `max_previews` clips get a picture (the rest: see the store).
    """
    status = read_mask_status(uri)
    rows = [
        "| clip | status | S1 (left, orange) | S2 (right, blue) | first / middle / last frame, or reason |",
        "|---|---|---|---|---|",
    ]
    shown = 0
    for record in status["clips"]:
        s1 = s2 = ""
        if record["status"] == "ok":
            coverage = list(record.get("coverage") or [])
            if len(coverage) == 2:
                s1, s2 = (f"{format_sig(100 * c)} % of pixels" for c in coverage)
            if shown < max_previews:
                try:
                    detail = _preview(f"{uri}/{record['preview']}", masks)
                    shown += 1
                except (OSError, ValueError) as exc:
                    detail = cell(f"preview unreadable: {exc}")
            else:
                detail = f"(preview in the store: `{record['preview']}`)"
        else:
            detail = cell(record["reason"])
        rows.append(f"| {record['clip_id']} | {record['status']} | {s1} | {s2} | {detail} |")
    summary = status["summary"]
    head = (
        f"**{status['backend']}** masks: {summary['ok']} ok, {summary['skipped']} skipped, {summary['failed']} failed. "
        "S1 = the left-most person (where both first appear), S2 = the other; overlays orange (S1) and blue (S2).\n\n"
    )
    return head + "\n".join(rows) + "\n"
