"""The `evaluate` stage (METHOD.md §6): generate videos per method, score them, report.

Pure Python (no Prefect). `evaluate_relation` does one relation:

1. Generation. For every method of `EvalConfig.methods` (the DreamRelation LoRA of the
   relation, the base model without LoRA, other inference LoRA files such as the direct-LoRA
   baseline or ablation runs) and every (prompt, seed) pair, one video is written to
   `videos/<method>/p<prompt>-seed<seed>.mp4`. Every method uses the same seeds, so the
   comparison is paired. Videos already on disk are skipped (an interrupted run resumes; a
   video is written under a temporary name and renamed, so a half-written file never counts).
   The base pipeline is loaded once; each method's LoRA is loaded as a named adapter and
   deleted afterwards, so the base model is exactly restored.
2. Scoring, after the pipeline is freed (a 7B VLM and Mochi need not share a GPU). Videos are
   decoded from the mp4 files, so a resumed run scores exactly what a fresh run scores.
   CLIP-T and temporal consistency per video (mean and std over videos); FVD against
   `fvd.reference_videos_dir` with the I3D (reference features cached under `fvd/`); relation
   accuracy with the configured VLM (mean ± std over repeats, unparseable answers counted).
   A metric that is not configured is reported as not computed, with the reason.
3. Output: `results.json` (everything, per method and per video), `fvd/<method>.npy`
   (generated I3D features, for pooled FVD over relations) and `report.md` (paper Table 1
   layout).

`combined_report` / `write_combined_report` build the report across relations from several
evaluation folders (or results.json files), with rows averaged over the relations present.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
from tqdm.auto import tqdm

from dreamrelation.data.prompts import load_eval_prompts
from dreamrelation.data.video import read_video, write_video
from dreamrelation.model import metrics
from dreamrelation.model.config import BaseModelConfig, SampleConfig
from dreamrelation.model.config_eval import EvalConfig, EvalMethod
from dreamrelation.model.mochi import resolve_device, resolve_dtype, resolve_model_dir
from dreamrelation.model.sample import check_lora_file, generate, load_inference_pipeline, read_lora_shapes
from dreamrelation.model.train import LORA_FILE
from dreamrelation.model.vlm import (
    VLMBackend,
    ask_repeated,
    make_vlm_backend,
    relation_question,
    sample_frames,
    summarize_answers,
)

log = logging.getLogger("dreamrelation.evaluate")

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
VIDEOS_DIR = "videos"
FVD_DIR = "fvd"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: Version of the results.json layout.
RESULTS_VERSION = 1

METRICS = ("relation_accuracy", "clip_t", "temporal_consistency", "fvd")
TABLE_HEADER = ("Method", "Relation Accuracy ↑", "CLIP-T ↑", "Temporal Consistency ↑", "FVD ↓")
METRIC_LABELS = {
    "relation_accuracy": "Relation accuracy",
    "clip_t": "CLIP-T",
    "temporal_consistency": "Temporal consistency",
    "fvd": "FVD",
}

Progress = Callable[[int, int], None]


class EvaluationError(ValueError):
    """The evaluation cannot run as configured (missing prompts, LoRA, model folder...)."""


# --------------------------------------------------------------------------------------------
# Planning: prompts, methods, video files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoJob:
    """One video to generate (or already generated) for one method."""

    method: str  # method slug
    prompt_index: int
    prompt: str
    seed: int

    @property
    def file(self) -> str:
        """Path relative to the evaluation folder."""
        return f"{VIDEOS_DIR}/{self.method}/{video_name(self.prompt_index, self.seed)}"


def video_name(prompt_index: int, seed: int) -> str:
    return f"p{prompt_index:02d}-seed{seed}.mp4"


def eval_prompts(relation: str, config: EvalConfig) -> list[str]:
    """The relation's evaluation prompts (the first `prompts_per_relation` of them)."""
    table = load_eval_prompts(config.prompts_path)
    if relation not in table:
        source = config.prompts_path or "the shipped prompt set"
        raise EvaluationError(
            f"no evaluation prompts for relation {relation} in {source} (it has {', '.join(sorted(table))}); "
            "give a prompt file with evaluate.prompts_path"
        )
    prompts = table[relation]
    return prompts[: config.prompts_per_relation] if config.prompts_per_relation else prompts


def plan_videos(methods: Sequence[EvalMethod], prompts: Sequence[str], seeds: Sequence[int]) -> dict[str, list[VideoJob]]:
    """Method slug -> its video jobs, prompts outer, seeds inner."""
    return {
        method.slug: [
            VideoJob(method.slug, index, prompt, seed) for index, prompt in enumerate(prompts) for seed in seeds
        ]
        for method in methods
    }


def resolve_lora(method: EvalMethod, relation: str, relation_lora: str | Path | None) -> Path | None:
    """The inference LoRA file of a method (None for the base model); raises if it is missing."""
    if method.source == "base":
        return None
    if method.source == "relation_lora":
        if relation_lora is None:
            raise EvaluationError(f"method {method.name!r} needs the relation LoRA, but none was given")
        path = Path(relation_lora)
    else:
        path = Path(str(method.lora_path).replace("{relation}", relation))
        if path.is_dir():
            path = path / LORA_FILE
    if not path.is_file():
        raise EvaluationError(f"method {method.name!r}: inference LoRA {path} does not exist")
    read_lora_shapes(path)  # fail before any video is generated, naming the file
    return path


# --------------------------------------------------------------------------------------------
# Tiny demo metric models
# --------------------------------------------------------------------------------------------


def _build_atomically(target: Path, builder: Callable[[Path], Any]) -> None:
    """Build into a temporary sibling and rename it into place (safe against concurrent builds)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        builder(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():  # a concurrent build that won is fine; anything else is not
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def ensure_tiny_eval_models(config: EvalConfig, seed: int = 0) -> list[Path]:
    """Demo: build the tiny CLIP / I3D / VLM at the configured paths when missing.

    Does nothing unless `config.build_tiny_models`. Returns the paths that were built.
    """
    if not config.build_tiny_models:
        return []
    from dreamrelation.model.vlm import build_tiny_vlm

    wanted: list[tuple[str | None, Callable[[Path], Any]]] = [
        (config.clip.model_dir, lambda p: metrics.build_tiny_clip(p, seed=seed)),
        (config.fvd.i3d_path, lambda p: metrics.build_tiny_i3d(p, seed=seed)),
        (config.vlm.model_dir if config.vlm and config.vlm.backend == "transformers" else None,
         lambda p: build_tiny_vlm(p, seed=seed)),
    ]
    built = []
    for location, builder in wanted:
        if location and not Path(location).exists():
            _build_atomically(Path(location), builder)
            log.info("built tiny metric model at %s", location)
            built.append(Path(location))
    return built


def _check_metric_inputs(config: EvalConfig) -> None:
    """Fail before generating when a configured metric cannot run."""
    if config.clip.model_dir and not Path(config.clip.model_dir).is_dir():
        raise EvaluationError(f"clip.model_dir {config.clip.model_dir} is not a folder")
    if config.fvd.i3d_path and not Path(config.fvd.i3d_path).is_file():
        raise EvaluationError(f"fvd.i3d_path {config.fvd.i3d_path} does not exist")
    if config.fvd.reference_videos_dir and not Path(config.fvd.reference_videos_dir).is_dir():
        raise EvaluationError(f"fvd.reference_videos_dir {config.fvd.reference_videos_dir} is not a folder")
    if config.fvd.i3d_path and config.fvd.reference_videos_dir and config.sample.frames < config.fvd.num_frames:
        raise EvaluationError(
            f"FVD uses {config.fvd.num_frames} frames per clip but evaluation videos have "
            f"{config.sample.frames} (sample.frames); lower fvd.num_frames (>= {config.fvd.min_frames}) "
            "or generate longer videos"
        )
    vlm = config.vlm
    if vlm is not None and vlm.backend == "transformers" and not Path(str(vlm.model_dir)).is_dir():
        raise EvaluationError(f"vlm.model_dir {vlm.model_dir} is not a folder")


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _adapter_name(slug: str) -> str:
    return "eval_" + slug.replace("-", "_")


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def generate_videos(
    jobs: Mapping[str, Sequence[VideoJob]],
    loras: Mapping[str, Path | None],
    out_dir: str | Path,
    sample: SampleConfig,
    base: BaseModelConfig,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write every missing video of `jobs`; returns {"generated": n, "skipped": m}.

    `loras` maps a method slug to its inference LoRA (None: base model). The pipeline is only
    loaded when something is missing.
    """

    out = Path(out_dir)
    all_jobs = [job for method_jobs in jobs.values() for job in method_jobs]
    missing = [job for job in all_jobs if not (out / job.file).is_file()]
    counts = {"generated": 0, "skipped": len(all_jobs) - len(missing)}
    if counts["skipped"]:
        log.info("evaluation videos: %d already on disk, skipped", counts["skipped"])
    if not missing:
        return counts
    device = resolve_device(base)
    pipe = load_inference_pipeline(resolve_model_dir(base), None, device, resolve_dtype(base, device))
    try:
        with tqdm(total=len(missing), desc="evaluate: generate", unit="video", disable=None) as bar:
            for slug, method_jobs in jobs.items():
                todo = [job for job in method_jobs if not (out / job.file).is_file()]
                if not todo:
                    continue
                lora = loras.get(slug)
                adapter = _adapter_name(slug)
                if lora is not None:
                    check_lora_file(lora, pipe.transformer)
                    pipe.load_lora_weights(str(lora), adapter_name=adapter)
                    if adapter not in getattr(pipe.transformer, "peft_config", {}):
                        raise EvaluationError(f"{lora} loaded no LoRA weights into the transformer")
                try:
                    for job in todo:
                        frames = generate(pipe, job.prompt, sample.model_copy(update={"seed": job.seed}))
                        write_video(out / job.file, frames, sample.fps)
                        counts["generated"] += 1
                        bar.update(1)
                        bar.set_postfix(method=slug)
                        if progress is not None:
                            progress(counts["generated"], len(missing))
                finally:
                    if lora is not None:
                        pipe.delete_adapters(adapter)
    finally:
        del pipe
        _free(device)
    log.info("evaluation videos: generated %d", counts["generated"])
    return counts


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def not_computed(reason: str) -> dict[str, Any]:
    """A metric entry for a metric that was not computed."""
    return {"computed": False, "value": None, "std": None, "reason": reason}


def _summary(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {"computed": True, "value": float(array.mean()), "std": float(array.std()), "n": int(array.size), "reason": None}


@dataclass
class MetricModels:
    """The loaded metric models; None with a reason where a metric is not configured."""

    clip: metrics.ClipEmbedder | None = None
    i3d: metrics.I3DFeatureExtractor | None = None
    vlm: VLMBackend | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        close = getattr(self.vlm, "close", None)
        if callable(close):
            close()


def load_metric_models(config: EvalConfig) -> MetricModels:
    """Load what `config` configures; record why the rest is not computed."""
    models = MetricModels()
    if config.clip.model_dir:
        models.clip = metrics.load_clip(config.clip.model_dir, config.clip.device, config.clip.batch_size)
    else:
        reason = "clip.model_dir is not set"
        models.reasons.update(clip_t=reason, temporal_consistency=reason)
    if not config.fvd.i3d_path:
        models.reasons["fvd"] = "fvd.i3d_path is not set (a TorchScript I3D file is needed)"
    elif not config.fvd.reference_videos_dir:
        models.reasons["fvd"] = "fvd.reference_videos_dir is not set (reference videos are needed)"
    else:
        models.i3d = metrics.load_i3d(
            config.fvd.i3d_path,
            config.fvd.device,
            config.fvd.num_frames,
            config.fvd.min_frames,
            config.fvd.frame_sampling,
            config.fvd.batch_size,
        )
    if config.vlm is None:
        models.reasons["relation_accuracy"] = "vlm is not set (no vision-language model configured)"
    else:
        models.vlm = make_vlm_backend(config.vlm)
    return models


def list_videos(folder: str | Path) -> list[Path]:
    """Video files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def reference_features(
    extractor: metrics.I3DFeatureExtractor, config: EvalConfig, cache_dir: str | Path
) -> tuple[np.ndarray, str]:
    """I3D features of the reference videos and an id of the reference set, cached in `cache_dir`.

    The cache is reused only if the file list (names and sizes), the I3D file and the frame
    settings are unchanged.
    """
    folder = Path(str(config.fvd.reference_videos_dir))
    files = list_videos(folder)
    if len(files) < 2:
        raise EvaluationError(f"FVD needs at least 2 reference videos in {folder}, found {len(files)}")
    key = {
        "folder": str(folder.resolve()),
        "files": [[p.name, p.stat().st_size] for p in files],
        "i3d": str(Path(str(config.fvd.i3d_path)).resolve()),
        "num_frames": config.fvd.num_frames,
        "sampling": config.fvd.frame_sampling,
    }
    reference_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cache_dir)
    features_file, key_file = cache / "reference.npy", cache / "reference.json"
    if features_file.is_file() and key_file.is_file() and json.loads(key_file.read_text()).get("id") == reference_id:
        return np.load(features_file), reference_id

    def videos() -> Iterator[np.ndarray]:
        for path in tqdm(files, desc="evaluate: FVD reference", unit="video", disable=None):
            yield read_video(path)[0]

    features = extractor.features(videos())
    cache.mkdir(parents=True, exist_ok=True)
    np.save(features_file, features)
    key_file.write_text(json.dumps({"id": reference_id, **key}, indent=2))
    return features, reference_id


def score_method(
    method: EvalMethod,
    jobs: Sequence[VideoJob],
    out_dir: str | Path,
    models: MetricModels,
    config: EvalConfig,
    relation_name: str,
    reference: tuple[np.ndarray, str] | None,
    lora: Path | None,
) -> dict[str, Any]:
    """All metrics of one method's videos (decoded from disk)."""
    out = Path(out_dir)
    videos: list[dict[str, Any]] = []
    i3d_rows: list[np.ndarray] = []
    vlm_frames: list[np.ndarray] = []
    for job in jobs:
        frames, _ = read_video(out / job.file)
        entry: dict[str, Any] = {"prompt_index": job.prompt_index, "prompt": job.prompt, "seed": job.seed, "file": job.file}
        if models.clip is not None:
            entry.update(metrics.clip_scores(models.clip, frames, job.prompt))
        if models.i3d is not None and reference is not None:
            i3d_rows.append(models.i3d.features([frames]))
        if models.vlm is not None and config.vlm is not None:
            vlm_frames.append(sample_frames(frames, config.vlm.num_frames))
        videos.append(entry)
        del frames

    result: dict[str, Any] = {
        "name": method.name,
        "slug": method.slug,
        "source": method.source,
        "lora": str(lora) if lora else None,
        "n_videos": len(videos),
        "videos": videos,
    }
    for metric in ("clip_t", "temporal_consistency"):
        result[metric] = _summary([v[metric] for v in videos]) if models.clip is not None else not_computed(models.reasons[metric])

    if models.i3d is None or reference is None:
        result["fvd"] = not_computed(models.reasons.get("fvd", "no reference features"))
    elif len(i3d_rows) < 2:
        result["fvd"] = not_computed(f"FVD needs at least 2 generated videos per method, got {len(i3d_rows)}")
    else:
        generated = np.concatenate(i3d_rows)
        features_file = f"{FVD_DIR}/{method.slug}.npy"
        (out / FVD_DIR).mkdir(parents=True, exist_ok=True)
        np.save(out / features_file, generated)
        result["fvd"] = {
            "computed": True,
            "value": metrics.frechet_distance(generated, reference[0]),
            "std": None,
            "reason": None,
            "n_generated": int(generated.shape[0]),
            "n_reference": int(reference[0].shape[0]),
            "reference_id": reference[1],
            "features_file": features_file,
        }

    if models.vlm is None or config.vlm is None:
        result["relation_accuracy"] = not_computed(models.reasons["relation_accuracy"])
    else:
        vlm = config.vlm
        questions = [relation_question(vlm.question_template, relation_name, job.prompt) for job in jobs]
        total = vlm.repeats * len(vlm_frames)
        with tqdm(total=total, desc=f"evaluate: VLM {method.slug}", unit="answer", disable=None) as bar:
            answers = ask_repeated(
                models.vlm, vlm_frames, questions, vlm.repeats, vlm.num_frames, vlm.seed,
                progress=lambda done, _total: bar.update(done - bar.n),
            )
        accuracy = summarize_answers(answers, vlm.unparseable_policy).to_dict()
        reason = None if accuracy["mean"] is not None else "no parseable VLM answer in any repeat"
        result["relation_accuracy"] = {
            "computed": accuracy["mean"] is not None,
            "value": accuracy["mean"],
            "std": accuracy["std"],
            "reason": reason,
            **{k: v for k, v in accuracy.items() if k not in ("mean", "std")},
        }
    return result


# --------------------------------------------------------------------------------------------
# One relation
# --------------------------------------------------------------------------------------------


def evaluate_relation(
    relation: str,
    config: EvalConfig,
    base: BaseModelConfig,
    relation_lora: str | Path | None,
    out_dir: str | Path,
    relation_name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate (resumably) and score every method for `relation`; write results.json and report.md.

    `relation_lora` is the inference LoRA trained for the relation (needed by methods with
    source 'relation_lora'); `relation_name` fills the VLM question's {relation} (default: the
    id). `progress(done, total)` is called after every generated video.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relation_name = relation_name or relation
    prompts = eval_prompts(relation, config)
    loras = {method.slug: resolve_lora(method, relation, relation_lora) for method in config.methods}
    ensure_tiny_eval_models(config)
    _check_metric_inputs(config)
    jobs = plan_videos(config.methods, prompts, config.seeds)

    started = time.perf_counter()
    counts = generate_videos(jobs, loras, out, config.sample, base, progress)
    generated_at = time.perf_counter()

    models = load_metric_models(config)
    try:
        reference = None
        if models.i3d is not None:
            reference = reference_features(models.i3d, config, out / FVD_DIR)
        methods = []
        for method in tqdm(config.methods, desc="evaluate: score", unit="method", disable=None):
            methods.append(
                score_method(method, jobs[method.slug], out, models, config, relation_name, reference, loras[method.slug])
            )
            log.info("%s [%s]: %s", relation, method.name, headline(methods[-1]))
    finally:
        models.close()

    results = {
        "version": RESULTS_VERSION,
        "relation": relation,
        "relation_name": relation_name,
        "prompts": prompts,
        "seeds": list(config.seeds),
        "videos_per_method": len(prompts) * len(config.seeds),
        "generation": counts,
        "timings_s": {
            "generate": round(generated_at - started, 3),
            "score": round(time.perf_counter() - generated_at, 3),
        },
        "config": config.model_dump(mode="json"),
        "methods": methods,
    }
    results = json_safe(results)
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, allow_nan=False), encoding="utf-8")
    (out / REPORT_FILE).write_text(relation_report(results), encoding="utf-8")
    return results


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


def headline(method: Mapping[str, Any]) -> dict[str, float | None]:
    """Metric name -> value (None where not computed) of one method's results."""
    return {metric: method[metric]["value"] for metric in METRICS}


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def format_cell(metric: str, entry: Mapping[str, Any] | None) -> str:
    """One table cell: 4 decimals, relation accuracy as mean ± std, FVD with 2 decimals, n/a if missing."""
    if not entry or not entry.get("computed") or entry.get("value") is None:
        return "n/a"
    if metric == "relation_accuracy":
        std = entry.get("std")
        return _number(entry["value"], 4) + ("" if std is None else f" ± {_number(std, 4)}")
    return _number(entry["value"], 2 if metric == "fvd" else 4)


def table_rows(methods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for `format_table` from results' method entries."""
    return [{"method": m["name"], **{metric: m.get(metric) for metric in METRICS}} for m in methods]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table in the paper's Table 1 layout (method, relation accuracy ± std, CLIP-T,
    temporal consistency, FVD); each row maps "method" and the metric names to metric entries."""
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [str(row["method"]).replace("|", "\\|")] + [format_cell(metric, row.get(metric)) for metric in METRICS]
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
            }
        )
    return records


def _not_computed_notes(methods: Sequence[Mapping[str, Any]]) -> list[str]:
    """'- FVD: <reason> (methods)' lines, one per distinct reason."""
    notes: dict[tuple[str, str], list[str]] = {}
    for m in methods:
        for metric in METRICS:
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
    if vlm:
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


def _pooled_relation_accuracy(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool the answers of all relations per repeat; mean ± std over repeats."""
    computed = [e for e in entries if e.get("computed") and "answers" in e]
    if not computed:
        return not_computed(next((e.get("reason") for e in entries if e.get("reason")), "not computed"))
    repeats = {e["repeats"] for e in computed}
    policies = {e["policy"] for e in computed}
    if len(computed) == len(entries) and len(repeats) == 1 and len(policies) == 1:
        answers = [sum((list(e["answers"][r]) for e in computed), []) for r in range(repeats.pop())]
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
        "how": f"mean of {len(values)} relation(s) (repeats or policies differ, or some relations lack it)",
    }


def _pooled_video_metric(entries: Sequence[Mapping[str, Any]], videos: Sequence[Sequence[Mapping[str, Any]]], metric: str) -> dict[str, Any]:
    values = [v[metric] for entry, vids in zip(entries, videos) if entry.get("computed") for v in vids if metric in v]
    if not values:
        return not_computed(next((e.get("reason") for e in entries if e.get("reason")), "not computed"))
    return {**_summary(values), "how": "over all videos of the relations"}


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
    averaged = []
    for name in order:
        present = [(r, m, f) for r, f in zip(results, folders) for m in r["methods"] if m["name"] == name]
        entries = {metric: [m[metric] for _, m, _ in present] for metric in METRICS}
        videos = [m["videos"] for _, m, _ in present]
        averaged.append(
            {
                "name": name,
                "relations": [r["relation"] for r, _, _ in present],
                "n_videos": sum(m["n_videos"] for _, m, _ in present),
                "relation_accuracy": _pooled_relation_accuracy(entries["relation_accuracy"]),
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
    lines.append(
        "Relation accuracy: answers pooled over relations per repeat (mean ± std over repeats); CLIP-T and "
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
