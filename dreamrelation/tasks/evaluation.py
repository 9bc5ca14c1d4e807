"""Tasks of the evaluate stage: score a relation's LoRA against the baselines, report across relations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import PipelineConfig, relation_table
from dreamrelation.data.ntu import normalize_relation_id
from dreamrelation.data.previews import format_sig, frame_strip, image_data_uri
from dreamrelation.data.relations import get_relation
from dreamrelation.data.store import ArtifactStore, fetch_local, fingerprint
from dreamrelation.data.video import read_video
from dreamrelation.evaluation.report import (
    JUDGE_ONLY_METRICS,
    METRIC_LABELS,
    REPORT_FILE,
    RESULTS_FILE,
    headline,
    write_combined_report,
)
from dreamrelation.model.train import LORA_FILE
from dreamrelation.plan import plan_relation, trained_key
from dreamrelation.stages.evaluate import evaluate_relation
from dreamrelation.tasks.common import StageResult, run_label, run_stage
from dreamrelation.tasks.summary import metrics_markdown
from dreamrelation.tasks.ui import Progress, artifact_key, cell, markdown_image

#: Prompts of the evaluation samples table, and the byte budget of each frame strip.
MAX_PROMPT_ROWS = 6
SAMPLE_BYTES = 16_000

#: Bump when the combined report's layout changes.
REPORT_CODE_VERSION = "1"


class _VideoProgress:
    """Progress artifact for generated videos, created on the first report (the total is known then)."""

    def __init__(self, relation: str) -> None:
        self.key = artifact_key(relation, "evaluate", "videos")
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(self.key, total, description="evaluation videos generated").start()
        self.bar.update(done)


def _read_text(uri: str) -> str:
    with fsspec.open(uri, "r") as handle:
        return handle.read()


def metric_rows(methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table-artifact rows: one per method, metrics at 4 significant figures, FVD among the first columns;
    the toy judge's subject fidelity and appearance leakage after relation accuracy where present."""
    rows = []
    for m in methods:
        ra = m["relation_accuracy"]
        accuracy = format_sig(ra.get("value"))
        if accuracy != "n/a" and ra.get("std") is not None:
            accuracy += f" ± {format_sig(ra['std'])}"
        rows.append({
            "method": m["name"],
            "relation accuracy": accuracy,
            **{METRIC_LABELS[k].lower(): format_sig(m[k].get("value")) for k in JUDGE_ONLY_METRICS if m.get(k)},
            "CLIP-T": format_sig(m["clip_t"].get("value")),
            "temporal consistency": format_sig(m["temporal_consistency"].get("value")),
            "FVD": format_sig(m["fvd"].get("value")),
            "videos": m.get("n_videos"),
        })
    return rows


def _strip(uri: str) -> str:
    frames, _ = read_video(fetch_local(uri))
    return markdown_image(image_data_uri(frame_strip(frames), "jpeg", SAMPLE_BYTES), "frames")


def samples_markdown(relation: str, uri: str, results: dict[str, Any], max_prompts: int = MAX_PROMPT_ROWS) -> str:
    """The metrics (4 significant figures) and, per prompt, one frame strip per method side by side.

    One video per prompt and method (the first seed); at most `max_prompts` prompts.
    """
    methods = results["methods"]
    stds = {m["name"]: m["relation_accuracy"].get("std") for m in methods}
    lines = [
        f"### {relation} ({results.get('relation_name') or ''}): metrics",
        "",
        metrics_markdown({m["name"]: headline(m) for m in methods}, stds),
        "",
        "### Samples: first / middle / last frame",
        "",
        "| prompt | " + " | ".join(cell(m["name"]) for m in methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    prompts: dict[int, str] = {}
    for m in methods:
        for video in m.get("videos", []):
            prompts.setdefault(video["prompt_index"], video["prompt"])
    shown = sorted(prompts)[:max_prompts]
    for index in shown:
        cells = []
        for m in methods:
            video = next((v for v in m.get("videos", []) if v["prompt_index"] == index), None)
            if video is None:
                cells.append("")
                continue
            try:
                cells.append(_strip(f"{uri}/{video['file']}"))
            except (OSError, ValueError) as exc:
                cells.append(cell(f"unreadable: {exc}"))
        lines.append(f"| {cell(prompts[index])} | " + " | ".join(cells) + " |")
    if len(prompts) > len(shown):
        lines += ["", f"{len(prompts) - len(shown)} more prompt(s) not shown; every video is in `{uri}/videos`."]
    return "\n".join(lines) + "\n"


def publish_evaluation(relation: str, uri: str) -> None:
    """The metrics table, the report and the samples (frame strips per method and prompt) as artifacts."""
    results = json.loads(_read_text(f"{uri}/{RESULTS_FILE}"))
    create_table_artifact(
        key=artifact_key(relation, "evaluate", "metrics"),
        table=metric_rows(results["methods"]),
        description=f"Evaluation metrics of {relation} ({results.get('relation_name')}), 4 significant figures: "
        "relation accuracy (mean ± std over repeats), CLIP-T, temporal consistency, FVD",
    )
    create_markdown_artifact(
        key=artifact_key(relation, "evaluate", "report"),
        markdown=_read_text(f"{uri}/{REPORT_FILE}"),
        description=f"Evaluation report of {relation} (paper Table 1 layout)",
    )
    create_markdown_artifact(
        key=artifact_key(relation, "evaluate", "samples"),
        markdown=samples_markdown(relation, uri, results),
        description=f"Evaluation of {relation}: metrics and one frame strip per method and prompt",
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(relation: str, config: PipelineConfig, force: bool = False) -> StageResult:
    """Generate the evaluation videos (resumably) and score every method; publish the report."""
    relation = normalize_relation_id(relation)
    store = ArtifactStore(config.root)
    plan = plan_relation(relation, config)
    train_uri = store.require(plan["train_relation"].key)
    trained_uris = {m.slug: store.require(plan[trained_key(m.slug)].key) for m in config.trained_methods}
    info = get_relation(relation, relation_table(config))

    def build(location: str, summary: dict[str, Any]) -> None:
        lora, trained = run_lora(train_uri), {slug: run_lora(uri) for slug, uri in trained_uris.items()}
        results = evaluate_relation(
            relation,
            config.evaluate,
            config.model,
            lora,
            location,
            relation_name=info.name,
            progress=_VideoProgress(relation),
            trained_loras=trained,
        )
        summary.update(
            videos_generated=results["generation"]["generated"],
            videos_reused=results["generation"]["skipped"],
            methods={m["name"]: headline(m) for m in results["methods"]},
        )

    result = run_stage(store, plan["evaluate"], build, force, resumable=True)
    publish_evaluation(relation, result.uri)
    return result


def run_lora(train_uri: str) -> Path:
    """The inference LoRA of a train_relation run, as a local file."""
    lora = fetch_local(f"{train_uri}/{LORA_FILE}")
    if not lora.is_file():
        raise FileNotFoundError(f"the train_relation run {train_uri} has no {LORA_FILE}")
    return lora


@task(name="evaluation-report", cache_policy=NO_CACHE)
def evaluation_report_task(relations: list[str], config: PipelineConfig) -> str:
    """The report across relations from their complete evaluate artifacts; returns its URI.

    Relations whose evaluation is not complete are left out with a warning; none complete is
    an error. The report is written to `reports/evaluation-<fp>/` (report.md, results.json).
    """
    logger = get_run_logger()
    store = ArtifactStore(config.root)
    found = []  # the complete evaluate artifacts, in the order asked for
    for relation in relations:
        artifact = plan_relation(relation, config)["evaluate"]
        if store.is_complete(artifact.key):
            found.append(artifact)
        else:
            logger.warning("evaluation report: %s has no complete evaluation at %s, left out", relation, store.uri(artifact.key))
    if not found:
        raise FileNotFoundError(f"no complete evaluation for any of {relations} under {config.root}: run the evaluate stage first")
    names = [a.relation for a in found]
    fp = fingerprint("evaluation_report", {"relations": names}, [a.fingerprint for a in found], REPORT_CODE_VERSION)
    key = f"reports/evaluation-{fp}"
    if not store.is_complete(key):
        with store.lock(key, holder=run_label()):
            if not store.is_complete(key):  # another run may have written it meanwhile
                store.remove_partials(key)
                with store.write(key, {"stage": "evaluation_report", "relations": names}) as tmp:
                    write_combined_report([store.uri(a.key) for a in found], tmp)
    uri = store.uri(key)
    create_markdown_artifact(
        key=artifact_key("evaluation", "report"),
        markdown=_read_text(f"{uri}/{REPORT_FILE}"),
        description=f"Evaluation over {', '.join(names)} (paper Table 1 layout)",
    )
    logger.info("evaluation report over %d relation(s): %s/%s", len(found), uri, REPORT_FILE)
    return uri
