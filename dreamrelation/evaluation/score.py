"""Scoring the evaluation videos (METHOD.md §6, step 2): CLIP-T, temporal consistency, FVD, relation accuracy.

Runs after generation, once the pipeline is freed (a 7B VLM and Mochi need not share a GPU).
Videos are decoded from the mp4 files, so a resumed run scores exactly what a fresh run
scores. CLIP-T and temporal consistency per video (mean and std over videos); FVD against
`fvd.reference_videos_dir` with the I3D (reference features cached under `fvd/`, generated
features kept in `fvd/<method>.npy` for pooled FVD over relations); relation accuracy with the
configured VLM (mean ± std over repeats, unparseable answers counted), or, with
`relation_judge: toy`, with the toy-world judge (issue 13 §3): relation accuracy, subject
fidelity and appearance leakage per video against the prompt's relation and subjects (mean ±
std over videos). A metric that is not configured is reported as not computed, with the
reason. The metric models themselves live in `perception/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dreamrelation.data.video import VIDEO_SUFFIXES, read_video
from dreamrelation.data.world import parse_caption
from dreamrelation.evaluation.config import JUDGE_METRICS, EvalConfig, EvalMethod, EvaluationError
from dreamrelation.evaluation.generate import VideoJob
from dreamrelation.evaluation.toy import judge_prompt, video_rates
from dreamrelation.perception import metrics
from dreamrelation.perception.config import VLMConfig
from dreamrelation.perception.judge import MIN_FRAMES, MIN_SIDE, JudgeParams, default_params
from dreamrelation.perception.vlm import (
    VLMBackend,
    ask_repeated,
    build_tiny_vlm,
    make_vlm_backend,
    relation_question,
    sample_frames,
    summarize_answers,
)

log = logging.getLogger("dreamrelation.evaluate")

FVD_DIR = "fvd"
WORLD_PROMPT_EXAMPLE = "A dark red triangle is pushing a light blue dog."


def not_computed(reason: str) -> dict[str, Any]:
    """A metric entry for a metric that was not computed."""
    return {"computed": False, "value": None, "std": None, "reason": reason}


def metric_summary(values: Sequence[float]) -> dict[str, Any]:
    """A computed metric entry: mean, population std and count of per-video values."""
    array = np.asarray(values, dtype=np.float64)
    return {"computed": True, "value": float(array.mean()), "std": float(array.std()), "n": int(array.size), "reason": None}


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


def active_vlm(config: EvalConfig) -> VLMConfig | None:
    """The VLM that scores relation accuracy; None when none is set or relation_judge is 'toy'."""
    return config.vlm if config.relation_judge == "vlm" else None


def ensure_tiny_eval_models(config: EvalConfig, seed: int = 0) -> list[Path]:
    """Demo: build the tiny CLIP / I3D / VLM at the configured paths when missing.

    Does nothing unless `config.build_tiny_models`. Returns the paths that were built.
    """
    if not config.build_tiny_models:
        return []
    vlm = active_vlm(config)
    wanted: list[tuple[str | None, Callable[[Path], Any]]] = [
        (config.clip.model_dir, lambda p: metrics.build_tiny_clip(p, seed=seed)),
        (config.fvd.i3d_path, lambda p: metrics.build_tiny_i3d(p, seed=seed)),
        (vlm.model_dir if vlm is not None and vlm.backend == "transformers" else None,
         lambda p: build_tiny_vlm(p, seed=seed)),
    ]
    built = []
    for location, builder in wanted:
        if location and not Path(location).exists():
            _build_atomically(Path(location), builder)
            log.info("built tiny metric model at %s", location)
            built.append(Path(location))
    return built


def check_metric_inputs(config: EvalConfig, prompts: Sequence[str]) -> None:
    """Fail before generating when a configured metric cannot run on these prompts."""
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
    vlm = active_vlm(config)
    if vlm is not None and vlm.backend == "transformers" and not Path(str(vlm.model_dir)).is_dir():
        raise EvaluationError(f"vlm.model_dir {vlm.model_dir} is not a folder")
    if config.relation_judge == "toy":
        check_toy_judge_inputs(config, prompts)


def check_toy_judge_inputs(config: EvalConfig, prompts: Sequence[str]) -> JudgeParams:
    """With relation_judge 'toy' (issue 13 §3): world-style prompts, videos the judge can read, its parameters.

    The judge reads the expected relation and subjects from each prompt (`parse_caption`), reads
    any size from MIN_FRAMES frames of MIN_SIDE x MIN_SIDE pixels (its features are normalised by
    subject size and frame width; a size other than the one it was fitted on is only warned
    about), and needs its fitted parameters. Returns them.
    """
    bad = []
    for prompt in prompts:
        try:
            parse_caption(prompt)
        except ValueError:
            bad.append(prompt)
    if bad:
        listed = "; ".join(repr(p) for p in bad)
        raise EvaluationError(
            f"evaluate.relation_judge is 'toy' but {len(bad)} prompt(s) are not toy-world captions: {listed}. "
            f"The toy judge reads the expected relation and subjects from world-style prompts, e.g. "
            f"{WORLD_PROMPT_EXAMPLE!r}; give such prompts (evaluate.prompts_path) or use relation_judge 'vlm'"
        )
    sample = config.sample
    if sample.frames < MIN_FRAMES or min(sample.height, sample.width) < MIN_SIDE:
        raise EvaluationError(
            f"the toy judge needs videos of at least {MIN_FRAMES} frames of {MIN_SIDE}x{MIN_SIDE} pixels, "
            f"evaluate.sample makes {sample.frames} frame(s) of {sample.height}x{sample.width}"
        )
    try:
        params = default_params()
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"the toy judge cannot load its parameters: {exc}") from exc
    fitted = params.fit.get("config", {})
    shape = (fitted.get("frames"), fitted.get("height"), fitted.get("width"))
    if shape != (sample.frames, sample.height, sample.width):
        log.warning(
            "the toy judge was fitted on %sx%sx%s world clips, evaluate.sample makes %sx%sx%s videos; its features "
            "are normalised by subject size and frame width, but scores are most reliable at the fitted format",
            *shape, sample.frames, sample.height, sample.width,
        )
    return params


@dataclass
class MetricModels:
    """The loaded metric models; None with a reason where a metric is not configured."""

    clip: metrics.ClipEmbedder | None = None
    i3d: metrics.I3DFeatureExtractor | None = None
    vlm: VLMBackend | None = None
    judge: JudgeParams | None = None  # relation_judge 'toy': the toy-world judge's parameters
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
    if config.relation_judge == "toy":
        models.judge = default_params()
    elif config.vlm is None:
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
        if models.judge is not None:
            verdict = judge_prompt(frames, job.prompt, models.judge)
            entry.update(video_rates(verdict), judged_relation=verdict.judged, judge_confidence=verdict.confidence)
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
        result[metric] = metric_summary([v[metric] for v in videos]) if models.clip is not None else not_computed(models.reasons[metric])

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

    if models.judge is not None:
        for metric in JUDGE_METRICS:
            result[metric] = {**metric_summary([v[metric] for v in videos]), "judge": "toy"}
    elif models.vlm is None or config.vlm is None:
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
