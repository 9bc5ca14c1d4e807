"""Stage `study_v2`: the study, round two (issue 21 §4). Does HMT keep the exemplars' look out?

World v2 (`data/world.py`) gives every exemplar of a target relation one scene, one body and one
scale (a checkerboard, tall, big), while the caption names only the body, as NTU captions say
"person". A method that learns the relation *and* the exemplars' look draws a checkerboard when
asked for stripes. Per target relation and seed, every method trains through the real loop
(`model.train.train`, METHOD.md §3-§5) and is judged at each of `eval_steps` on

- P1: prompts naming another scene, body and scale than the exemplars';
- P2: prompts naming another body only (how often an unnamed scene drifts to the exemplars').

Metrics per video (`evaluation.toy.attribute_rates`): relation, scene / body / scale follow and
leak, joint (relation and scene and body as prompted); per method: memorisation (distance of the
generated trajectory features to the nearest exemplar's, over that of fresh clips of the
relation) and diversity (spread of one prompt's trajectory features across seeds).

One of them is the primary set (`primary_set`: P1 in round two, P2 in round three): it is judged
at every eval step and read by the leak probe, the curves, the front plot and the verdicts; the
other is judged at the last step. The leak probe runs first: unless direct LoRA's scene leak on
the primary set exceeds the base's by `probe_margin`, the world has nothing to decouple and the
study stops before comparing methods. Differences between methods come with paired bootstrap 95 %
intervals (`evaluation.bootstrap`); with `hmt_pairing: matched_accuracy` the HMT claim pairs
checkpoints of about equal relation accuracy.

Output (resumable: every judged step of every run is a file): `probe.json`, `study.json`,
`study.md`, `front.png` (relation accuracy against scene leak, one curve per method) and
`strips/`.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dreamrelation.data.previews import format_sig
from dreamrelation.data.world import NAMEABLE, SCALES, ClipSpec, WorldConfig, caption, render_clip, sample_specs
from dreamrelation.evaluation.bootstrap import paired_difference
from dreamrelation.evaluation.config import StudyV2Config
from dreamrelation.evaluation.toy import AttributeVideo, attribute_rates, judge_attributes
from dreamrelation.model import CPU_AUTOCAST_WARNING
from dreamrelation.model.config import BaseModelConfig, SampleConfig, TrainConfig
from dreamrelation.model.mochi import MOCHI
from dreamrelation.model.sample import generate
from dreamrelation.model.train import train
from dreamrelation.perception.judge import default_params, judge_video
from dreamrelation.stages.study import diagnostics, exemplar_clips, method_train_config, write_strips

log = logging.getLogger("dreamrelation.study")

RESULTS_JSON, REPORT_MD, FRONT_PNG, PROBE_JSON = "study.json", "study.md", "front.png", "probe.json"
PROMPT_SETS = ("P0", "P1", "P2")
#: The comparisons reported with intervals: (method, against it), each on P1 at the last step.
COMPARISONS = (("dreamrelation", "direct_lora"), ("dreamrelation", "no_hmt"), ("dreamrelation", "no_rcl"),
               ("dreamrelation", "base"), ("lambda_m_0", "dreamrelation"), ("lambda_m_5", "dreamrelation"),
               ("idle_decay", "dreamrelation"), ("direct_lora", "base"))
REPORTED = ("relation_accuracy", "scene_leak", "body_leak", "scale_leak", "joint")
#: Per set and step in the curves: the reported metrics, and how often the prompted body is drawn.
SET_METRICS = (*REPORTED, "body_follow")
#: The other set's metrics in the report's curve table and in the comparisons.
SECONDARY = ("relation_accuracy", "scene_leak")
#: The HMT claim's comparisons (issue 21 §5): DreamRelation against these.
HMT_BASELINES = ("direct_lora", "no_hmt")

Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- what is asked


def metric_key(prompt_set: str, metric: str) -> str:
    """A set's metric as named in curves and comparisons: P1's bare (round two's names), others prefixed."""
    return metric if prompt_set == "P1" else f"{prompt_set}_{metric}"


def secondary_set(cfg: StudyV2Config) -> str:
    """The prompt set judged at the last step only."""
    return "P2" if cfg.primary_set == "P1" else "P1"


def exemplar_attributes(cfg: StudyV2Config) -> dict[str, str | None]:
    return {"scene": cfg.exemplar_scene, "body": cfg.exemplar_body, "scale": cfg.exemplar_scale}


def exemplar_specs(cfg: StudyV2Config, world: WorldConfig, relation: str) -> list[ClipSpec]:
    """The exemplars: one scene, body and scale; captions name the body only."""
    return sample_specs(world, cfg.exemplars, [relation], kinds=[cfg.exemplar_body], seed=cfg.seed + 101,
                        scenes=[cfg.exemplar_scene], scales=[cfg.exemplar_scale], named=["body"])


def prompt_sets(cfg: StudyV2Config, world: WorldConfig, relation: str) -> dict[str, list[ClipSpec]]:
    """P1 (another scene, body and scale, all named), P2 (another body, named alone) and, when
    `fit_prompts` asks for it, P0 (new draws like the exemplars: is the relation learnt at all?)."""
    bodies = [k for k in world.kinds if k != cfg.exemplar_body]
    fit = {"P0": sample_specs(world, cfg.fit_prompts, [relation], kinds=[cfg.exemplar_body], seed=cfg.seed + 404,
                              scenes=[cfg.exemplar_scene], scales=[cfg.exemplar_scale], named=["body"])}
    return ({} if cfg.fit_prompts == 0 else fit) | {
        "P1": sample_specs(world, cfg.prompts, [relation], kinds=bodies, seed=cfg.seed + 202,
                           scenes=[s for s in world.scenes if s != cfg.exemplar_scene],
                           scales=[s for s in SCALES if s != cfg.exemplar_scale], named=NAMEABLE),
        "P2": sample_specs(world, cfg.prompts, [relation], kinds=bodies, seed=cfg.seed + 303, named=["body"]),
    }


def study_train_config(method: str, cfg: StudyV2Config, seed: int) -> TrainConfig:
    """One method's training: the shared settings, the method's switches, a judge every eval step."""
    every = math.gcd(*cfg.eval_steps)
    return method_train_config(method, cfg.train, seed).model_copy(update={"sample_every": every})


# --------------------------------------------------------------------------- judging while training


class CheckpointJudge:
    """Generates and judges the prompt sets with the transformer as it trains (`train`'s sampler).

    At each of `steps` it writes `eval-<step>.json` in the run folder (skipped when present, so
    a resumed run does not judge twice): the primary set's first `cfg.checkpoint_prompts` prompts
    and all of P0 (when there is one), and every set in full at the last step. Sampling seed of prompt i:
    `sample.seed + i`.
    """

    def __init__(self, cfg: StudyV2Config, model_dir: Path, prompts: dict[str, list[ClipSpec]], world: WorldConfig,
                 sample: SampleConfig, run_dir: Path, steps: list[int]):
        self.cfg, self.prompts, self.sample, self.run_dir, self.steps = cfg, prompts, sample, run_dir, steps
        self.captions = {name: [caption(s, world) for s in specs] for name, specs in prompts.items()}
        tokenizer, text_encoder = MOCHI.load_text_encoder(model_dir)
        negative = MOCHI.encode_text(tokenizer, text_encoder, [sample.negative_prompt], MOCHI.max_text_length)
        self.text = {}
        for name, texts in self.captions.items():
            embeds, masks = MOCHI.encode_text(tokenizer, text_encoder, texts, MOCHI.max_text_length)
            self.text[name] = [(embeds[i : i + 1], masks[i : i + 1], *negative) for i in range(len(texts))]
        self.vae = MOCHI.load_vae(model_dir)
        self.scheduler = MOCHI.scheduler_class.from_pretrained(model_dir / "scheduler")

    def path(self, step: int) -> Path:
        return self.run_dir / f"eval-{step:05d}.json"

    def __call__(self, transformer: torch.nn.Module, step: int) -> None:
        if step not in self.steps or self.path(step).is_file():
            return
        pipe = MOCHI.pipeline_from_parts(transformer, self.vae, self.scheduler)
        last = step == self.steps[-1]
        record: dict[str, Any] = {"step": step, "sets": {}}
        early = {"P0": len(self.prompts.get("P0", [])), self.cfg.primary_set: self.cfg.checkpoint_prompts}
        for name in (n for n in PROMPT_SETS if n in self.prompts):
            count = len(self.prompts[name]) if last else early.get(name, 0)
            videos = []
            for i in range(min(count, len(self.prompts[name]))):
                frames = generate(pipe, None, self.sample.model_copy(update={"seed": self.sample.seed + i}),
                                  self.text[name][i])
                videos.append(judge_attributes(frames, self.prompts[name][i], self.captions[name][i]))
                if last and name == self.cfg.primary_set and i < self.cfg.strip_prompts:
                    np.save(self.run_dir / f"strip{i}.npy", frames[:: max(1, len(frames) // 5)])
            if videos:
                record["sets"][name] = [video_record(v) for v in videos]
        tmp = self.run_dir / f".{self.path(step).name}.partial"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path(step))
        log.info("judged %s at step %d", self.run_dir.name, step)


def video_record(video: AttributeVideo) -> dict[str, Any]:
    return {"prompt": video.prompt, "relation": video.relation, "judged": video.judged, "asked": video.asked,
            "seen": video.seen, "trajectory": video.trajectory}


def as_video(record: dict[str, Any]) -> AttributeVideo:
    return AttributeVideo(record["prompt"], record["relation"], record["judged"], record["asked"], record["seen"],
                          record["trajectory"])


# --------------------------------------------------------------------------- runs


def run_one(cfg: StudyV2Config, relation: str, method: str, seed: int, model_dir: Path, folder: Path,
            training: tuple[list, Any, Any], prompts: dict[str, list[ClipSpec]], world: WorldConfig) -> dict[str, Any]:
    """Train (unless `base`) one (relation, method, seed), judging at every eval step; cached."""
    run_dir = folder / "runs" / relation / method / f"seed{seed}"
    done = run_dir / "judged.json"
    if done.is_file():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    sample = cfg.sample.model_copy(update={"seed": 1000 * seed})
    steps = [0] if method == "base" else cfg.eval_steps
    judge = CheckpointJudge(cfg, model_dir, prompts, world, sample, run_dir, steps)
    if method == "base":
        judge(MOCHI.load_pipeline(model_dir).transformer, 0)
    else:
        clips, empty, vae_norm = training
        base = BaseModelConfig(profile="mochi-1", model_dir=str(model_dir), device="cpu", dtype="float32")
        train_cfg = study_train_config(method, cfg, seed)
        train(clips, empty, vae_norm, train_cfg, run_dir, base, sampler=judge)
        if not all(judge.path(step).is_file() for step in steps):
            # Interrupted between a checkpoint and its judging: the resumed loop starts after that
            # step, so train again from scratch (CPU training is deterministic: the same run).
            log.warning("%s: a judged step is missing after a resume; training the run again", run_dir)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            train(clips, empty, vae_norm, train_cfg, run_dir, base, sampler=judge)
    evaluations = {step: json.loads(judge.path(step).read_text()) for step in steps}
    record = {"relation": relation, "method": method, "seed": seed,
              "steps": {str(step): evaluations[step]["sets"] for step in steps},
              "diagnostics": diagnostics(run_dir) if method != "base" else None}
    tmp = run_dir / ".judged.json.partial"
    tmp.write_text(json.dumps(record))
    tmp.replace(done)
    return record


def run_in_worker(*args: Any) -> dict[str, Any]:
    """`run_one` in a worker process, on one torch thread (the same numbers whatever `workers` is)."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=CPU_AUTOCAST_WARNING)
    return run_one(*args)


def run_jobs(fn: Callable[..., Any], jobs: list[tuple], workers: int,
             on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """`fn(*job)` for every job in `workers` spawned processes; results in the order of `jobs`.

    `on_result(index, result)` is called as each job finishes. If anything stops the caller
    (a job's error, the callback's, Ctrl-C, Prefect turning a SIGTERM into an exception), the
    workers are terminated at once instead of finishing their jobs: every run resumes from its
    last checkpoint, so nothing is lost but the steps since.
    """
    results: list[Any] = [None] * len(jobs)
    others = set(multiprocessing.active_children())
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_result is not None:
                    on_result(futures[future], results[futures[future]])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            workers_left = [p for p in multiprocessing.active_children() if p not in others]
            for process in workers_left:
                process.terminate()
            for process in workers_left:
                process.join()
            raise
    return results


def last_sets(run: dict[str, Any]) -> dict[str, list[AttributeVideo]]:
    """The videos of a run's last judged step, per prompt set."""
    step = max(run["steps"], key=int)
    return {name: [as_video(v) for v in videos] for name, videos in run["steps"][step].items()}


def scene_leak(videos: list[AttributeVideo], exemplar: dict[str, str | None]) -> float:
    values = [attribute_rates(v, exemplar)["scene_leak"] for v in videos]
    return float(np.mean([v for v in values if v is not None]))


def leak_probe(cfg: StudyV2Config, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Direct LoRA's scene leak on the primary set against the base's (issue 21 §4): is there
    anything to decouple?"""
    exemplar = exemplar_attributes(cfg)
    direct = scene_leak(last_sets(runs[0])[cfg.primary_set], exemplar)
    base = scene_leak(last_sets(runs[1])[cfg.primary_set], exemplar)
    passed = direct >= base + cfg.probe_margin
    return {"relation": runs[0]["relation"], "seed": runs[0]["seed"], "prompt_set": cfg.primary_set,
            "direct_lora_scene_leak": direct, "base_scene_leak": base, "margin": cfg.probe_margin,
            "passed": bool(passed)}


def run_study_v2(cfg: StudyV2Config, model_dir: str | Path, world: WorldConfig, folder: str | Path,
                 progress: Progress | None = None) -> dict[str, Any]:
    """The leak probe, then every (relation, method, seed) run, the tables, intervals and the front plot."""
    folder, model_dir = Path(folder), Path(model_dir)
    if world.version != 2:
        raise ValueError("the study, round two, needs world v2 (pretrain.world.version: 2; configs/toy/world-v2.yaml)")
    inputs = {}
    for relation in cfg.relations:
        inputs[relation] = (exemplar_clips(exemplar_specs(cfg, world, relation), world, model_dir),
                            prompt_sets(cfg, world, relation))
    first = cfg.relations[0]
    probe_runs = run_jobs(run_in_worker, [(cfg, first, m, cfg.seeds[0], model_dir, folder, *inputs[first], world)
                                          for m in ("direct_lora", "base")], workers=1)
    probe = leak_probe(cfg, probe_runs)
    (folder / PROBE_JSON).write_text(json.dumps(probe, indent=1))
    log.info("leak probe: direct LoRA scene leak %.3f, base %.3f, margin %.2f: %s", probe["direct_lora_scene_leak"],
             probe["base_scene_leak"], cfg.probe_margin, "passed" if probe["passed"] else "FAILED")
    if not probe["passed"]:
        (folder / REPORT_MD).write_text(probe_markdown(probe))
        result = {"config": cfg.model_dump(mode="json"), "probe": probe, "stopped": True}
        (folder / RESULTS_JSON).write_text(json.dumps(result, indent=1))
        return result
    jobs = [(relation, method, seed) for relation in cfg.relations for seed in cfg.seeds for method in cfg.methods]
    finished = 0

    def report(index: int, _run: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        log.info("study run %s done (%d/%d)", "/".join(map(str, jobs[index])), finished, len(jobs))
        if progress is not None:
            progress("study", finished, len(jobs))

    runs = run_jobs(run_in_worker, [(cfg, relation, method, seed, model_dir, folder, *inputs[relation], world)
                                    for relation, method, seed in jobs], cfg.workers, report)
    references = {r: reference_distances(cfg, world, r) for r in cfg.relations}
    table = curves(runs, cfg)
    comparisons = compare_methods(runs, cfg, table)
    extra = {m: memorisation_and_diversity(runs, m, cfg, world, references) for m in cfg.methods}
    result = {"config": cfg.model_dump(mode="json"), "model_dir": str(model_dir), "probe": probe, "stopped": False,
              "curves": table, "comparisons": comparisons,
              "verdicts": verdicts(comparisons, cfg.primary_set, cfg.hmt_pairing), "memorisation": extra,
              "runs": [{k: v for k, v in r.items() if k != "steps"} for r in runs]}
    (folder / RESULTS_JSON).write_text(json.dumps(result, indent=1))
    (folder / REPORT_MD).write_text(report_markdown(result, cfg))
    cv2.imwrite(str(folder / FRONT_PNG), front_plot(table, cfg.methods, cfg.primary_set)[:, :, ::-1])
    write_strips(folder, cfg)
    return result


# --------------------------------------------------------------------------- aggregation


def unit_values(runs: list[dict[str, Any]], method: str, metric: str, cfg: StudyV2Config, step: str | None = None,
                prompt_set: str = "P1") -> np.ndarray:
    """(relation x seed, prompts) per-video values of `metric` for one method (NaN: not applicable)."""
    exemplar = exemplar_attributes(cfg)
    rows = []
    for relation in cfg.relations:
        for seed in cfg.seeds:
            run = next(r for r in runs if (r["relation"], r["method"], r["seed"]) == (relation, method, seed))
            key = max(run["steps"], key=int) if step is None or method == "base" else step
            videos = [as_video(v) for v in run["steps"][key].get(prompt_set, [])]
            values = [attribute_rates(v, exemplar)[metric] for v in videos]
            rows.append([np.nan if v is None else v for v in values])
    width = max(len(r) for r in rows)
    return np.array([r + [np.nan] * (width - len(r)) for r in rows], float)


def curves(runs: list[dict[str, Any]], cfg: StudyV2Config) -> dict[str, Any]:
    """Per method and eval step: mean and seed std of SET_METRICS on the primary set, on the other
    set too at the last step (named by `metric_key`), and P0's relation accuracy when judged."""
    table: dict[str, Any] = {}
    for method in cfg.methods:
        steps = ["0"] if method == "base" else [str(s) for s in cfg.eval_steps]
        for step in steps:
            sets = [cfg.primary_set] + ([secondary_set(cfg)] if step == steps[-1] else [])
            cell = {metric_key(name, metric): _summary(unit_values(runs, method, metric, cfg, step, name))
                    for name in sets for metric in SET_METRICS}
            if cfg.fit_prompts:
                cell["P0_relation_accuracy"] = _summary(unit_values(runs, method, "relation_accuracy", cfg, step, "P0"))
            table.setdefault(method, {})[step] = cell
    return table


def _summary(values: np.ndarray) -> dict[str, float]:
    """Mean over every video, std over the (relation x seed) cluster means (NaN where nothing applies)."""
    if not np.isfinite(values).any():
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(np.nanmean(values, axis=1)))}


def matched_steps(table: dict[str, Any], a: str, b: str, accuracy: str) -> tuple[str, str]:
    """The eval steps of `a` and `b` whose mean relation accuracies (`accuracy`, a curves key) are
    closest; on a tie, the later pair (round three's HMT pairing, docs/study.md R9)."""
    pairs = [(abs(cell_a[accuracy]["mean"] - cell_b[accuracy]["mean"]), -(int(step_a) + int(step_b)), step_a, step_b)
             for step_a, cell_a in table[a].items() for step_b, cell_b in table[b].items()]
    _, _, step_a, step_b = min(pairs)
    return step_a, step_b


def compare_methods(runs: list[dict[str, Any]], cfg: StudyV2Config, table: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired bootstrap intervals of the reported differences at the last step: every REPORTED
    metric on the primary set, relation accuracy and scene leak on the other (added after round
    two's first run, where a base that follows named scenes leaked only where the scene was
    unnamed) and P0's relation accuracy when P0 was judged. With `hmt_pairing: matched_accuracy`,
    also DreamRelation against each of HMT_BASELINES at `matched_steps` (metrics `matched_<key>`)."""
    other = secondary_set(cfg)
    measured = [(metric_key(cfg.primary_set, m), m, cfg.primary_set) for m in REPORTED] + [
        (metric_key(other, m), m, other) for m in SECONDARY]
    if cfg.fit_prompts:
        measured.append(("P0_relation_accuracy", "relation_accuracy", "P0"))

    def last(method: str) -> str:
        return "0" if method == "base" else str(cfg.eval_steps[-1])

    pairs = [(a, b, last(a), last(b), measured) for a, b in COMPARISONS if a in cfg.methods and b in cfg.methods]
    if cfg.hmt_pairing == "matched_accuracy":
        matched = [(f"matched_{metric_key(cfg.primary_set, m)}", m, cfg.primary_set) for m in SECONDARY]
        accuracy = metric_key(cfg.primary_set, "relation_accuracy")
        pairs += [("dreamrelation", b, *matched_steps(table, "dreamrelation", b, accuracy), matched)
                  for b in HMT_BASELINES if "dreamrelation" in cfg.methods and b in cfg.methods]
    out = []
    for a, b, a_step, b_step, metrics in pairs:
        for name, metric, prompt_set in metrics:
            difference = paired_difference(unit_values(runs, a, metric, cfg, a_step, prompt_set),
                                           unit_values(runs, b, metric, cfg, b_step, prompt_set),
                                           cfg.resamples, cfg.seed)
            out.append({"a": a, "b": b, "metric": name, "steps": [int(a_step), int(b_step)], "mean": difference.mean,
                        "low": difference.low, "high": difference.high, "units": difference.units})
    return out


def _standardised(features: list[list[float]]) -> np.ndarray:
    model = default_params(2).relation_model
    return (np.asarray(features, float) - np.asarray(model.mean)) / np.asarray(model.scale)


def reference_distances(cfg: StudyV2Config, world: WorldConfig, relation: str) -> dict[str, Any]:
    """Exemplar trajectory features, and the mean distance of fresh clips of the relation (the
    primary set's prompts rendered) to their nearest exemplar: the scale memorisation is measured against."""
    exemplars = [judge_video(render_clip(s, world).video, default_params(2)).features
                 for s in exemplar_specs(cfg, world, relation)]
    fresh = [judge_video(render_clip(s, world).video, default_params(2)).features
             for s in prompt_sets(cfg, world, relation)[cfg.primary_set]]
    bank = _standardised([f for f in exemplars if f is not None])
    fresh_distance = np.mean([np.linalg.norm(bank - x, axis=1).min() for x in _standardised([f for f in fresh if f is not None])])
    return {"bank": bank, "fresh": float(fresh_distance)}


def memorisation_and_diversity(runs: list[dict[str, Any]], method: str, cfg: StudyV2Config, world: WorldConfig,
                               references: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Memorisation: mean distance of the primary set's generations' trajectory features to the
    nearest exemplar, over that of fresh clips (below 1: closer to the exemplars than new clips of
    the relation are). Diversity: mean over those prompts of the spread (mean distance to their
    centroid) across seeds. Both at the last step."""
    ratios, spreads = [], []
    for relation in cfg.relations:
        per_prompt: dict[int, list[np.ndarray]] = {}
        for run in (r for r in runs if r["method"] == method and r["relation"] == relation):
            for i, video in enumerate(last_sets(run)[cfg.primary_set]):
                if video.trajectory:
                    x = _standardised([video.trajectory])[0]
                    bank = references[relation]["bank"]
                    ratios.append(np.linalg.norm(bank - x, axis=1).min() / references[relation]["fresh"])
                    per_prompt.setdefault(i, []).append(x)
        for points in per_prompt.values():
            if len(points) > 1:
                stack = np.stack(points)
                spreads.append(float(np.linalg.norm(stack - stack.mean(axis=0), axis=1).mean()))
    return {"memorisation": float(np.mean(ratios)) if ratios else None,
            "diversity": float(np.mean(spreads)) if spreads else None}


# --------------------------------------------------------------------------- report


def _interval(comparisons: list[dict[str, Any]], a: str, b: str, metric: str) -> dict[str, Any] | None:
    return next((c for c in comparisons if (c["a"], c["b"], c["metric"]) == (a, b, metric)), None)


def _sign(c: dict[str, Any] | None) -> int | None:
    """+1 / -1 when the interval lies above / below 0, 0 when it contains 0, None when not measured."""
    return None if c is None else 1 if c["low"] > 0 else -1 if c["high"] < 0 else 0


def verdicts(comparisons: list[dict[str, Any]], primary_set: str = "P1",
             pairing: str = "last_step") -> dict[str, str]:
    """The three claims (issue 21 §5), decided from the intervals on the primary set by rules fixed
    before any comparison was run (round two: P1, last step; round three: P2, matched pairs, R9):

    - HMT reduces leakage at matched relation accuracy: DreamRelation's scene leak is below both
      direct LoRA's and without-HMT's beyond the interval, and its relation accuracy is not below
      either beyond the interval (supported); scene leak within the interval of either (refuted);
      otherwise (less leak bought with lower relation accuracy, or more leak) not supported. With
      `pairing` matched_accuracy both read the `matched_` comparisons, else the last step's.
    - RCL improves relation dynamics: relation accuracy against without-RCL at the last step above
      0 beyond the interval (supported), within it (not shown), below (refuted).
    - The triplet beats one LoRA: the joint score against direct LoRA, the same way.
    """
    accuracy_key, leak_key, joint_key = (metric_key(primary_set, m) for m in ("relation_accuracy", "scene_leak", "joint"))
    prefix = "matched_" if pairing == "matched_accuracy" else ""
    leak = [_sign(_interval(comparisons, "dreamrelation", b, prefix + leak_key)) for b in HMT_BASELINES]
    accuracy = [_sign(_interval(comparisons, "dreamrelation", b, prefix + accuracy_key)) for b in HMT_BASELINES]
    if None in leak or None in accuracy:
        hmt = "not measured"
    elif all(v == -1 for v in leak) and all(v != -1 for v in accuracy):
        hmt = "supported"
    elif 0 in leak:
        hmt = "refuted (scene leak within the interval)"
    else:
        hmt = "not supported (less leak only with lower relation accuracy, or more leak)"

    def simple(a: str, b: str, metric: str) -> str:
        sign = _sign(_interval(comparisons, a, b, metric))
        return {None: "not measured", 1: "supported", 0: "not shown (within the interval)", -1: "refuted"}[sign]

    return {"HMT reduces leakage at matched relation accuracy": hmt,
            "RCL improves relation dynamics": simple("dreamrelation", "no_rcl", accuracy_key),
            "the triplet beats one LoRA": simple("dreamrelation", "direct_lora", joint_key)}


def relation_learnt(comparisons: list[dict[str, Any]], accuracy_key: str = "relation_accuracy") -> str:
    """Context for the verdicts, not one of their rules (added after round two's first run, where
    no method's relation accuracy rose above the base's): whether any trained method learnt the
    target relation beyond the interval (`accuracy_key`: the primary set's relation accuracy). If
    none did, "matched relation accuracy" is matched at the base's level, and less leak may only
    mean less learning."""
    signs = {a: _sign(_interval(comparisons, a, "base", accuracy_key)) for a in ("dreamrelation", "direct_lora")}
    above = [a for a, sign in signs.items() if sign == 1]
    if all(sign is None for sign in signs.values()):
        return "not measured (no comparison against the base)"
    if above:
        return f"yes ({', '.join(above)} above the base beyond the interval)"
    return ("no: neither DreamRelation nor direct LoRA beats the base's relation accuracy beyond the "
            "interval, so the verdicts compare methods that have not learnt the relation")


def probe_markdown(probe: dict[str, Any]) -> str:
    return "\n".join([
        "# Toy-world study, round two: stopped at the leak probe", "",
        f"Direct LoRA ({probe['relation']}, seed {probe['seed']}) leaks the exemplars' scene into "
        f"{probe['direct_lora_scene_leak']:.3f} of {probe['prompt_set']} videos, the base into "
        f"{probe['base_scene_leak']:.3f}; the probe asks for a margin of {probe['margin']:.2f}. The world has "
        "nothing for HMT to decouple, so no method was compared: change the world first (issue 21 §4).", ""])


def _cell_text(cell: dict[str, float] | None) -> str:
    return "" if cell is None else f"{format_sig(cell['mean'], 3)} ± {format_sig(cell['std'], 2)}"


def _difference_text(c: dict[str, Any]) -> str:
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def report_markdown(result: dict[str, Any], cfg: StudyV2Config) -> str:
    """Curves per method, the intervals of the differences, the verdicts, memorisation and diversity."""
    probe, primary, other = result["probe"], cfg.primary_set, secondary_set(cfg)
    columns = [metric_key(primary, m) for m in SET_METRICS] + [metric_key(other, m) for m in SECONDARY]
    columns += ["P0_relation_accuracy"] if cfg.fit_prompts else []
    lines = [
        "# Toy-world study, round two", "",
        f"Relations {', '.join(cfg.relations)}; seeds {cfg.seeds}; {cfg.exemplars} exemplars "
        f"({cfg.exemplar_scene}, {cfg.exemplar_body}, {cfg.exemplar_scale}; captions name the body); "
        f"{cfg.train.steps} steps at lr {cfg.train.lr:g}; judged at steps {cfg.eval_steps} "
        f"({cfg.checkpoint_prompts} {primary} prompts before the last, {cfg.prompts} per set at the last). "
        f"Primary prompt set {primary}; HMT pairing {cfg.hmt_pairing}.", "",
        f"Leak probe ({primary}): direct LoRA scene leak {probe['direct_lora_scene_leak']:.3f} vs base "
        f"{probe['base_scene_leak']:.3f} (margin {probe['margin']:.2f}): passed.", "",
        f"## Curves (mean ± std over relation x seed; {other} at the last step only)", "",
        "| method | step | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for method, steps in result["curves"].items():
        for step, cell in steps.items():
            lines.append(f"| {method} | {step} | " + " | ".join(_cell_text(cell.get(c)) for c in columns) + " |")
    last = [c for c in result["comparisons"] if not c["metric"].startswith("matched_")]
    metrics = list(dict.fromkeys(c["metric"] for c in last))
    lines += ["", "## Differences at the last step (paired bootstrap 95 % CI)", "",
              "| a - b | " + " | ".join(m.replace("_", " ") for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for a, b in (p for p in COMPARISONS if p in {(c["a"], c["b"]) for c in last}):
        cells = {c["metric"]: c for c in last if (c["a"], c["b"]) == (a, b)}
        lines.append(f"| {a} - {b} | " + " | ".join(_difference_text(cells[m]) for m in metrics) + " |")
    matched = [c for c in result["comparisons"] if c["metric"].startswith("matched_")]
    if matched:
        lines += ["", f"## At matched relation accuracy ({primary}; the HMT claim's pairs, `matched_steps`)", "",
                  "| a (step) - b (step) | relation accuracy | scene leak |", "|---|---|---|"]
        for b in dict.fromkeys(c["b"] for c in matched):
            cells = [c for c in matched if c["b"] == b]
            (step_a, step_b) = cells[0]["steps"]
            lines.append(f"| {cells[0]['a']} ({step_a}) - {b} ({step_b}) | "
                         + " | ".join(_difference_text(c) for c in cells) + " |")
    accuracy_key = metric_key(primary, "relation_accuracy")
    lines += ["", "## Verdicts (rules in `stages/study_v2.py:verdicts`)", ""]
    lines += [f"- *{claim}*: {verdict}" for claim, verdict in result["verdicts"].items()]
    lines += ["", "Relation learnt above the base (context, not a verdict rule): "
              f"{relation_learnt(result['comparisons'], accuracy_key)}."]
    lines += ["", f"## Memorisation and diversity ({primary}, last step)", "", "| method | memorisation | diversity |",
              "|---|---|---|"]
    for method, values in result["memorisation"].items():
        lines.append(f"| {method} | {format_sig(values['memorisation'], 3, '-')} | {format_sig(values['diversity'], 3, '-')} |")
    return "\n".join(lines) + "\n"


def front_plot(table: dict[str, Any], methods: list[str], prompt_set: str = "P1", width: int = 560,
               height: int = 420) -> np.ndarray:
    """RGB plot: relation accuracy (up) against scene leak (right) on `prompt_set`, one polyline per
    method over its steps."""
    image = np.full((height, width, 3), 255, np.uint8)
    left, bottom, top, right = 50, height - 40, 20, width - 150
    colours = [(52, 101, 164), (204, 0, 0), (0, 0, 0), (245, 121, 0), (115, 210, 22), (117, 80, 123),
               (193, 125, 17), (78, 154, 6)]

    def at(leak: float, accuracy: float) -> tuple[int, int]:
        return int(left + leak * (right - left)), int(bottom - accuracy * (bottom - top))

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = at(tick, tick)
        cv2.line(image, (x, top), (x, bottom), (225, 225, 225), 1)
        cv2.line(image, (left, y), (right, y), (225, 225, 225), 1)
        cv2.putText(image, f"{tick:g}", (x - 8, bottom + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        cv2.putText(image, f"{tick:g}", (left - 34, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    cv2.rectangle(image, (left, top), (right, bottom), (0, 0, 0), 1)
    cv2.putText(image, f"scene leak ({prompt_set}) ->", (left + 60, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(image, "relation acc.", (2, top - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    leak, accuracy = metric_key(prompt_set, "scene_leak"), metric_key(prompt_set, "relation_accuracy")
    for i, method in enumerate(m for m in methods if m in table):
        colour = colours[i % len(colours)]
        points = [at(cell[leak]["mean"], cell[accuracy]["mean"]) for cell in table[method].values()]
        for p, q in zip(points, points[1:]):
            cv2.line(image, p, q, colour, 1, cv2.LINE_AA)
        for p in points:
            cv2.circle(image, p, 3, colour, -1)
        cv2.circle(image, points[-1], 5, colour, 1)
        cv2.putText(image, method, (right + 10, top + 14 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    return image
