"""Evaluation output (METHOD.md §6, step 3): results.json, report.md, and the report across relations.

One relation: `write_relation_results` writes `results.json` (everything, per method and per
video) and `report.md` (paper Table 1 layout). Across relations: `combined_report` /
`write_combined_report` build one report from several evaluation folders (or results.json
files), with rows averaged over the relations present (relation accuracy pooled per repeat,
CLIP metrics over all videos, FVD from the pooled generated I3D features). Results scored by
the toy-world judge (`relation_judge: toy`, issue 13 §3) also carry subject fidelity and
appearance leakage, shown as two more columns beside relation accuracy and pooled over videos.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from dreamrelation.data.previews import format_sig
from dreamrelation.evaluation.config import JUDGE_METRICS, EvaluationError
from dreamrelation.evaluation.score import FVD_DIR, metric_summary, not_computed
from dreamrelation.perception import metrics
from dreamrelation.perception.vlm import summarize_answers

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
#: Version of the results.json layout.
RESULTS_VERSION = 1

METRICS = ("relation_accuracy", "clip_t", "temporal_consistency", "fvd")
#: Reported only by the toy-world judge (relation_judge 'toy'); columns after relation accuracy where present.
JUDGE_ONLY_METRICS = tuple(metric for metric in JUDGE_METRICS if metric not in METRICS)
COLUMN_HEADERS = {
    "relation_accuracy": "Relation Accuracy ↑",
    "subject_fidelity": "Subject Fidelity ↑",
    "appearance_leakage": "Appearance Leakage ↓",
    "joint": "Joint ↑",
    "clip_t": "CLIP-T ↑",
    "temporal_consistency": "Temporal Consistency ↑",
    "fvd": "FVD ↓",
}
METRIC_LABELS = {
    "relation_accuracy": "Relation accuracy",
    "subject_fidelity": "Subject fidelity",
    "appearance_leakage": "Appearance leakage",
    "joint": "Joint (relation and both subjects)",
    "clip_t": "CLIP-T",
    "temporal_consistency": "Temporal consistency",
    "fvd": "FVD",
}
NOT_JUDGED = "not scored by the toy-world judge (relation_judge was 'vlm')"


def write_relation_results(out_dir: str | Path, results: Mapping[str, Any]) -> dict[str, Any]:
    """Write one relation's `results.json` (strict JSON) and `report.md`; return the results as written."""
    out = Path(out_dir)
    written = json_safe(results)
    (out / RESULTS_FILE).write_text(json.dumps(written, indent=2, allow_nan=False), encoding="utf-8")
    (out / REPORT_FILE).write_text(relation_report(written), encoding="utf-8")
    return written


def json_safe(value: Any) -> Any:
    """`value` with NaN/inf replaced by None and numpy scalars by Python numbers (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reported_metrics(methods: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Table order of the metrics of `methods` (results' method entries or table rows): relation
    accuracy, the toy judge's subject fidelity and appearance leakage where any method has them, then
    CLIP-T, temporal consistency, FVD."""
    judged = tuple(metric for metric in JUDGE_ONLY_METRICS if any(m.get(metric) is not None for m in methods))
    return METRICS[:1] + judged + METRICS[1:]


def headline(method: Mapping[str, Any]) -> dict[str, float | None]:
    """Metric name -> value (None where not computed) of one method's results."""
    return {metric: method[metric]["value"] for metric in reported_metrics([method])}


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def format_cell(metric: str, entry: Mapping[str, Any] | None) -> str:
    """One table cell: 4 significant figures (`format_sig`, the UI's one rule), accuracy as mean ± std, n/a if missing."""
    if not entry or not entry.get("computed") or entry.get("value") is None:
        return "n/a"
    if metric == "relation_accuracy":
        std = entry.get("std")
        return format_sig(entry["value"]) + ("" if std is None else f" ± {format_sig(std)}")
    return format_sig(entry["value"])


def table_rows(methods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for `format_table` from results' method entries."""
    metrics = reported_metrics(methods)
    return [{"method": m["name"], **{metric: m.get(metric) for metric in metrics}} for m in methods]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table in the paper's Table 1 layout (method, relation accuracy ± std, CLIP-T,
    temporal consistency, FVD); each row maps "method" and the metric names to metric entries.
    Rows scored by the toy judge add subject fidelity and appearance leakage after relation accuracy."""
    metrics = reported_metrics(rows)
    lines = [
        "| " + " | ".join(["Method", *(COLUMN_HEADERS[metric] for metric in metrics)]) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for row in rows:
        cells = [str(row["method"]).replace("|", "\\|")] + [format_cell(metric, row.get(metric)) for metric in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metric_table_records(methods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flat records (one per method) for a Prefect table artifact or a CSV."""
    records = []
    for m in methods:
        ra = m["relation_accuracy"]
        records.append(
            {
                "method": m["name"],
                "relation_accuracy": ra["value"],
                "relation_accuracy_std": ra["std"],
                "clip_t": m["clip_t"]["value"],
                "temporal_consistency": m["temporal_consistency"]["value"],
                "fvd": m["fvd"]["value"],
                "videos": m.get("n_videos"),
                "vlm_unparseable": ra.get("n_unparseable"),
                **{metric: m[metric]["value"] for metric in JUDGE_ONLY_METRICS if m.get(metric)},
            }
        )
    return records


def _not_computed_notes(methods: Sequence[Mapping[str, Any]]) -> list[str]:
    """'- FVD: <reason> (methods)' lines, one per distinct reason."""
    notes: dict[tuple[str, str], list[str]] = {}
    for m in methods:
        for metric in reported_metrics(methods):
            entry = m.get(metric) or {}
            if not entry.get("computed") or entry.get("value") is None:
                reason = entry.get("reason") or "not computed"
                notes.setdefault((metric, reason), []).append(m["name"])
    lines = []
    for (metric, reason), names in notes.items():
        who = "all methods" if len(names) == len(methods) else ", ".join(names)
        lines.append(f"- {METRIC_LABELS[metric]} ({who}): {reason}")
    return lines


def _unparseable_note(methods: Sequence[Mapping[str, Any]]) -> str | None:
    parts = []
    policy = None
    for m in methods:
        ra = m.get("relation_accuracy") or {}
        if "n_unparseable" in ra:
            parts.append(f"{m['name']} {ra['n_unparseable']}/{ra['n_videos'] * ra['repeats']}")
            policy = ra.get("policy")
    if not parts:
        return None
    how = "counted as no" if policy == "count_as_no" else "left out of the accuracy"
    return f"Unparseable VLM answers ({how}): " + ", ".join(parts) + "."


def _relation_title(results: Mapping[str, Any]) -> str:
    name = results.get("relation_name")
    return results["relation"] if not name or name == results["relation"] else f"{results['relation']} ({name})"


def relation_report(results: Mapping[str, Any], heading: str = "#") -> str:
    """Markdown report of one relation's results."""
    config = results["config"]
    sample = config["sample"]
    lines = [f"{heading} Evaluation: {_relation_title(results)}", ""]
    lines.append(
        f"{len(results['prompts'])} prompt(s) x seeds {results['seeds']} = {results['videos_per_method']} "
        f"video(s) per method; {sample['steps']} Euler steps, CFG {sample['guidance']}, {sample['frames']} frames "
        f"at {sample['height']}x{sample['width']}, {sample['fps']:g} fps."
    )
    vlm = config.get("vlm")
    if config.get("relation_judge") == "toy":
        lines.append(
            "Relation accuracy, subject fidelity, appearance leakage and joint (relation and both subjects right in "
            "one video): the toy-world judge (perception/judge.py) on every video, against the relation and "
            "subjects of its prompt; relation accuracy as mean ± std over videos."
        )
        lines.append(
            "These numbers measure a toy world (tiny models trained on a 2-core CPU, docs/toy_world.md): they "
            "show whether a method learns a relation there and how it compares with the others on the same "
            "videos, not how it does on Mochi-1."
        )
    elif vlm:
        where = vlm.get("model") if vlm["backend"] == "openai" else vlm.get("model_dir")
        lines.append(
            f"Relation accuracy: {vlm['backend']} VLM `{where}`, mean ± std over {vlm['repeats']} repeats."
        )
    lines += ["", format_table(table_rows(results["methods"]))]
    note = _unparseable_note(results["methods"])
    if note:
        lines += [note, ""]
    notes = _not_computed_notes(results["methods"])
    if notes:
        lines += ["Not computed:", *notes, ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Across relations
# --------------------------------------------------------------------------------------------


def _results_file(location: str) -> str:
    return location if location.endswith(".json") else location.rstrip("/") + "/" + RESULTS_FILE


def load_results(location: str | Path) -> dict[str, Any]:
    """results.json of an evaluation folder (or the file itself); local path or fsspec URL."""
    with fsspec.open(_results_file(str(location)), "r") as handle:
        return json.load(handle)


def _load_array(folder: str, relative: str) -> np.ndarray | None:
    try:
        with fsspec.open(folder.rstrip("/") + "/" + relative, "rb") as handle:
            return np.load(handle)
    except (FileNotFoundError, OSError, ValueError):
        return None


def _pooled_relation_accuracy(
    entries: Sequence[Mapping[str, Any]], videos: Sequence[Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """VLM: pool the answers of all relations per repeat (mean ± std over repeats). Toy judge
    everywhere: mean ± std over all videos. Otherwise the mean of the per-relation values."""
    computed = [e for e in entries if e.get("computed")]
    if not computed:
        return not_computed(next((e.get("reason") for e in entries if e.get("reason")), "not computed"))
    if len(computed) == len(entries) and all(e.get("judge") == "toy" for e in computed):
        return _pooled_judged(entries, videos, "relation_accuracy")
    answered = [e for e in computed if "answers" in e]
    repeats = {e["repeats"] for e in answered}
    policies = {e["policy"] for e in answered}
    if len(answered) == len(entries) and len(repeats) == 1 and len(policies) == 1:
        answers = [sum((list(e["answers"][r]) for e in answered), []) for r in range(repeats.pop())]
        pooled = summarize_answers(answers, policies.pop()).to_dict()
        return {
            "computed": pooled["mean"] is not None,
            "value": pooled["mean"],
            "std": pooled["std"],
            "reason": None,
            "how": "answers pooled over relations per repeat",
            "n_videos": pooled["n_videos"],
            "repeats": pooled["repeats"],
            "n_unparseable": pooled["n_unparseable"],
            "policy": pooled["policy"],
        }
    values = [e["value"] for e in computed]
    return {
        "computed": True,
        "value": float(np.mean(values)),
        "std": None,
        "reason": None,
        "how": f"mean of {len(values)} relation(s) (judges, repeats or policies differ, or some relations lack it)",
    }


def _pooled_video_metric(entries: Sequence[Mapping[str, Any]], videos: Sequence[Sequence[Mapping[str, Any]]], metric: str) -> dict[str, Any]:
    values = [v[metric] for entry, vids in zip(entries, videos) if entry.get("computed") for v in vids if metric in v]
    if not values:
        return not_computed(next((e.get("reason") for e in entries if e.get("reason")), "not computed"))
    return {**metric_summary(values), "how": "over all videos of the relations"}


def _pooled_judged(
    entries: Sequence[Mapping[str, Any]], videos: Sequence[Sequence[Mapping[str, Any]]], metric: str
) -> dict[str, Any]:
    """A toy-judge metric (0/1 per video) over all judged videos of the relations."""
    pooled = _pooled_video_metric(entries, videos, metric)
    if not pooled["computed"]:
        return pooled
    if not all(e.get("computed") for e in entries):
        pooled["how"] = "over the videos of the relations scored by the toy-world judge"
    return {**pooled, "judge": "toy"}


def _pooled_fvd(entries: Sequence[Mapping[str, Any]], folders: Sequence[str | None]) -> dict[str, Any]:
    computed = [(e, f) for e, f in zip(entries, folders) if e.get("computed")]
    if not computed:
        return not_computed(next((e.get("reason") for e in entries if e.get("reason")), "not computed"))
    reference_ids = {e.get("reference_id") for e, _ in computed}
    if len(computed) == len(entries) and len(reference_ids) == 1 and all(f for _, f in computed):
        generated = [_load_array(str(f), e["features_file"]) for e, f in computed]
        reference = _load_array(str(computed[0][1]), f"{FVD_DIR}/reference.npy")
        if reference is not None and all(g is not None for g in generated):
            features = np.concatenate(generated)  # type: ignore[arg-type]
            return {
                "computed": True,
                "value": metrics.frechet_distance(features, reference),
                "std": None,
                "reason": None,
                "how": "generated I3D features pooled over relations",
                "n_generated": int(features.shape[0]),
                "n_reference": int(reference.shape[0]),
            }
    values = [e["value"] for e, _ in computed]
    return {
        "computed": True,
        "value": float(np.mean(values)),
        "std": None,
        "reason": None,
        "how": f"mean of {len(values)} per-relation FVD(s) (features not poolable)",
    }


def combine_results(
    results: Sequence[Mapping[str, Any]], folders: Sequence[str | None] | None = None
) -> dict[str, Any]:
    """Average every method over the relations it was evaluated on.

    Relation accuracy pools the answers of all relations per repeat (mean ± std over repeats,
    as for one relation); CLIP-T and temporal consistency average over all videos; FVD pools
    the generated I3D features of all relations against the shared reference set when the
    feature files are readable from `folders` (else the mean of per-relation FVDs).
    """
    if not results:
        raise EvaluationError("no evaluation results to combine")
    folders = list(folders) if folders is not None else [None] * len(results)
    relations = [r["relation"] for r in results]
    if len(set(relations)) != len(relations):
        raise EvaluationError(f"relations repeat among the results: {relations}")
    order: list[str] = []
    for r in results:
        for m in r["methods"]:
            if m["name"] not in order:
                order.append(m["name"])
    metrics = reported_metrics([m for r in results for m in r["methods"]])
    averaged = []
    for name in order:
        present = [(r, m, f) for r, f in zip(results, folders) for m in r["methods"] if m["name"] == name]
        entries = {metric: [m.get(metric) or not_computed(NOT_JUDGED) for _, m, _ in present] for metric in metrics}
        videos = [m["videos"] for _, m, _ in present]
        averaged.append(
            {
                "name": name,
                "relations": [r["relation"] for r, _, _ in present],
                "n_videos": sum(m["n_videos"] for _, m, _ in present),
                "relation_accuracy": _pooled_relation_accuracy(entries["relation_accuracy"], videos),
                **{metric: _pooled_judged(entries[metric], videos, metric) for metric in metrics if metric in JUDGE_ONLY_METRICS},
                "clip_t": _pooled_video_metric(entries["clip_t"], videos, "clip_t"),
                "temporal_consistency": _pooled_video_metric(entries["temporal_consistency"], videos, "temporal_consistency"),
                "fvd": _pooled_fvd(entries["fvd"], [f for _, _, f in present]),
            }
        )
    return {
        "version": RESULTS_VERSION,
        "relations": relations,
        "relation_names": {r["relation"]: r.get("relation_name") for r in results},
        "average": averaged,
        "per_relation": [dict(r) for r in results],
    }


def combined_markdown(combined: Mapping[str, Any]) -> str:
    """The report across relations: the averaged table, then one table per relation."""
    relations = combined["relations"]
    names = combined.get("relation_names", {})
    listed = ", ".join(f"{r} ({names[r]})" if names.get(r) and names[r] != r else r for r in relations)
    lines = ["# Evaluation report", "", f"Relations: {listed}.", ""]
    lines += [f"## Average over {len(relations)} relation(s)", "", format_table(table_rows(combined["average"]))]
    partial = [m for m in combined["average"] if len(m["relations"]) != len(relations)]
    for m in partial:
        lines.append(f"- {m['name']}: evaluated on {', '.join(m['relations'])} only.")
    judged = any((m.get("relation_accuracy") or {}).get("judge") == "toy" for m in combined["average"])
    accuracy = (
        "Relation accuracy, subject fidelity and appearance leakage (toy-world judge): mean over all videos "
        "(relation accuracy ± std over videos)"
        if judged
        else "Relation accuracy: answers pooled over relations per repeat (mean ± std over repeats)"
    )
    lines.append(
        f"{accuracy}; CLIP-T and "
        "temporal consistency: mean over all videos; FVD: generated features pooled over relations against the "
        "reference set (or the mean of per-relation FVDs where features cannot be pooled)."
    )
    notes = _not_computed_notes(combined["average"])
    if notes:
        lines += ["", "Not computed:", *notes]
    lines.append("")
    for results in combined["per_relation"]:
        lines.append(relation_report(results, heading="##"))
    return "\n".join(lines).rstrip() + "\n"


def combined_report(locations: Sequence[str | Path]) -> tuple[dict[str, Any], str]:
    """(combined results, Markdown) from evaluation folders or results.json files (paths or URLs)."""
    folders = [str(loc)[: -len(RESULTS_FILE)].rstrip("/") if str(loc).endswith(RESULTS_FILE) else str(loc) for loc in locations]
    results = [load_results(loc) for loc in locations]
    combined = combine_results(results, folders)
    return combined, combined_markdown(combined)


def write_combined_report(locations: Sequence[str | Path], out_dir: str | Path) -> str:
    """Write `results.json` (combined) and `report.md` to `out_dir` (local path or URL).

    Returns the location of report.md.
    """
    combined, markdown = combined_report(locations)
    out = str(out_dir).rstrip("/")
    fs, path = fsspec.core.url_to_fs(out)
    fs.makedirs(path, exist_ok=True)
    with fsspec.open(f"{out}/{RESULTS_FILE}", "w") as handle:
        json.dump(json_safe(combined), handle, indent=2, allow_nan=False)
    with fsspec.open(f"{out}/{REPORT_FILE}", "w") as handle:
        handle.write(markdown)
    return f"{out}/{REPORT_FILE}"
