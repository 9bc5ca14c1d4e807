"""Stage `study`: does the method carry a relation from people to other subjects? (issue 13 §4)

For each target relation (one the toy base never saw): 20 exemplar clips of stick-figure
*people* doing it; train every method with the same steps, learning rate and seeds through the
real training loop (`model.train.train`, METHOD.md §3-§5); generate held-out prompts whose
subjects are *not* people; judge every video (`perception.judge`). Methods:

- `dreamrelation`: LoRA triplet + hybrid mask training + relational contrastive loss;
- `direct_lora`: one LoRA on Q, K, V, out with the plain loss (the paper's baseline);
- `base`: no tuning;
- `no_hmt`, `no_rcl`: the method without HMT / without RCL (paper Table 2).

All settings are fixed in `StudyConfig` before any method is compared, and are the same for
every method. Output (resumable: each finished run keeps `judged.json`): `study.json`,
`study.md`, `study.png` (bar chart) and `strips/<relation>-<method>.png` under the folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from dreamrelation.data.masks import latent_masks
from dreamrelation.data.previews import format_sig
from dreamrelation.data.world import KINDS, ClipSpec, WorldConfig, render_clip, sample_specs
from dreamrelation.evaluation.config import STUDY_METRICS, StudyConfig, StudyV2Config
from dreamrelation.evaluation.toy import as_records, judge_generations, summarize
from dreamrelation.model.analysis import subspace_similarity
from dreamrelation.model.config import BaseModelConfig, TrainConfig
from dreamrelation.model.family import LatentNorm
from dreamrelation.model.mochi import MOCHI, encode_text
from dreamrelation.model.pretrain import videos_to_tensor
from dreamrelation.model.sample import load_inference_pipeline
from dreamrelation.model.train import TrainClip, checkpoint_dirs, read_metrics, train

log = logging.getLogger("dreamrelation.study")

RESULTS_JSON, REPORT_MD, CHART_PNG = "study.json", "study.md", "study.png"


def method_train_config(method: str, train_cfg: TrainConfig, seed: int) -> TrainConfig:
    """The study's training config of one method and seed."""
    update: dict[str, Any] = {"seed": seed}
    if method == "direct_lora":
        update.update(hmt=False, rcl=False, lora=train_cfg.lora.model_copy(update={"mode": "direct"}))
    elif method == "no_hmt":
        update["hmt"] = False
    elif method == "no_rcl":
        update["rcl"] = False
    elif method.startswith("lambda_m_"):  # round two (issue 21): lambda_m_0, lambda_m_5
        update["lambda_m"] = float(method.removeprefix("lambda_m_"))
    elif method == "idle_decay":  # round two: the authors' idle adapters (METHOD.md §3)
        update["idle_adapters"] = "decay"
    return train_cfg.model_copy(update=update)


def exemplar_specs(cfg: StudyConfig, world: WorldConfig, relation: str) -> list[ClipSpec]:
    """People doing `relation`."""
    return sample_specs(world, cfg.exemplars, relations=[relation], kinds=["person"], seed=cfg.seed + 101)


def prompt_specs(cfg: StudyConfig, world: WorldConfig, relation: str) -> list[ClipSpec]:
    """Held-out prompts: `relation` between subjects that are not people."""
    others = [k for k in world.kinds if k != "person"] or [k for k in KINDS if k != "person"]
    return sample_specs(world, cfg.prompts, relations=[relation], kinds=others, seed=cfg.seed + 202)


@torch.no_grad()
def exemplar_clips(specs: list[ClipSpec], world: WorldConfig, model_dir: Path) -> tuple[list[TrainClip], Any, Any]:
    """TrainClips (VAE posterior, T5 features, ground-truth latent masks), the empty prompt, the VAE config."""
    vae = MOCHI.load_vae(model_dir)
    tokenizer, text_encoder = MOCHI.load_text_encoder(model_dir)
    clips = []
    for i, spec in enumerate(specs):
        clip = render_clip(spec, world)
        posterior = vae.encode(videos_to_tensor(clip.video[None])).latent_dist
        embeds, mask = encode_text(tokenizer, text_encoder, [clip.caption])
        clips.append(TrainClip(
            clip_id=f"{spec.relation}-{i:02d}",
            latent_mean=posterior.mean[0],
            latent_logvar=posterior.logvar[0],
            text_embeds=embeds[0],
            text_mask=mask[0],
            latent_masks=torch.from_numpy(latent_masks(clip.masks)),
        ))
    empty = encode_text(tokenizer, text_encoder, [""])
    return clips, (empty[0][0], empty[1][0]), LatentNorm.from_config(vae.config)


Progress = Callable[[str, int, int], None]


def run_one(
    cfg: StudyConfig, relation: str, method: str, seed: int, model_dir: Path, folder: Path,
    training: tuple[list[TrainClip], Any, Any], prompts: list[ClipSpec], world: WorldConfig,
) -> dict[str, Any]:
    """Train (unless `base`) and judge one (relation, method, seed); cached in the run folder."""
    run_dir = folder / "runs" / relation / method / f"seed{seed}"
    done = run_dir / "judged.json"
    if done.is_file():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    lora_path = None
    base = BaseModelConfig(profile="mochi-1", model_dir=str(model_dir), device="cpu", dtype="float32")
    if method != "base":
        clips, empty, vae_norm = training
        result = train(clips, empty, vae_norm, method_train_config(method, cfg.train, seed), run_dir, base)
        lora_path = result.lora_path
    pipe = load_inference_pipeline(MOCHI, model_dir, lora_path)
    sample = cfg.sample.model_copy(update={"seed": 1000 * seed})
    judged, kept = judge_generations(pipe, prompts, world, sample, keep=cfg.strip_prompts)
    for i, frames in enumerate(kept):
        np.save(run_dir / f"strip{i}.npy", frames[:: max(1, len(frames) // 5)])
    record = {"relation": relation, "method": method, "seed": seed, **summarize(judged),
              "diagnostics": diagnostics(run_dir) if lora_path is not None else None, "videos": as_records(judged)}
    tmp = run_dir / ".judged.json.partial"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(done)
    return record


def diagnostics(run_dir: Path) -> dict[str, Any]:
    """What a trained run learned, for the analysis when a method disappoints (issue 13 §5).

    `branch_loss`: mean reconstruction loss per HMT branch over the last half of training;
    `rcl_loss`: mean contrastive loss there; `update_norm`: sum over modules of ||B A||_F per
    adapter (the size of each LoRA's weight change); `qk_subspace` / `qv_subspace`: METHOD.md §7
    similarity (rank 4) of the relation adapter's Q and K updates, and of its Q update with the
    first subject adapter's V update, averaged over blocks (vision stream).
    """
    records = read_metrics(run_dir / "metrics.jsonl")
    late = records[len(records) // 2 :]
    groups = sorted({r["group"] for r in late})
    rcl = [r["loss_rcl"] for r in late if r.get("loss_rcl") is not None]
    weights = load_file(checkpoint_dirs(run_dir)[-1] / "adapters.safetensors")
    deltas: dict[tuple[str, str], torch.Tensor] = {}
    for key, a in weights.items():
        module, _, rest = key.partition(".lora_A.")
        if rest:
            adapter = rest.removesuffix(".weight")
            deltas[(module, adapter)] = weights[f"{module}.lora_B.{adapter}.weight"] @ a
    norms: dict[str, float] = {}
    for (_, adapter), delta in deltas.items():
        norms[adapter] = norms.get(adapter, 0.0) + float(delta.norm())

    def mean_similarity(first: tuple[str, str], second: tuple[str, str]) -> float | None:
        pairs = [(deltas[(m, first[1])], deltas[(m.replace(first[0], second[0]), second[1])])
                 for (m, adapter) in deltas if adapter == first[1] and m.endswith(f"attn1.{first[0]}")
                 and (m.replace(first[0], second[0]), second[1]) in deltas]
        # rows are output features: compare the column spaces of the updates (their transposes' rows)
        values = [subspace_similarity(x.T, y.T, rank=4) for x, y in pairs]
        return float(np.mean(values)) if values else None

    return {
        "branch_loss": {g: float(np.mean([r["loss_rec"] for r in late if r["group"] == g])) for g in groups},
        "rcl_loss": float(np.mean(rcl)) if rcl else None,
        "update_norm": norms,
        "qk_subspace": mean_similarity(("to_q", "relation"), ("to_k", "relation")),
        "qv_subspace": mean_similarity(("to_q", "relation"), ("to_v", "subject1")),
    }


def run_study(cfg: StudyConfig, model_dir: str | Path, world: WorldConfig, folder: str | Path,
              progress: Progress | None = None) -> dict[str, Any]:
    """Every (relation, method, seed) run, then the tables, chart and strips."""
    folder, model_dir = Path(folder), Path(model_dir)
    runs = []
    total = len(cfg.relations) * len(cfg.methods) * len(cfg.seeds)
    for relation in cfg.relations:
        training = exemplar_clips(exemplar_specs(cfg, world, relation), world, model_dir)
        prompts = prompt_specs(cfg, world, relation)
        for method in cfg.methods:
            for seed in cfg.seeds:
                runs.append(run_one(cfg, relation, method, seed, model_dir, folder, training, prompts, world))
                log.info("study %s %s seed %d: relation accuracy %s, fidelity %s, leakage %s", relation,
                         method, seed, *(format_sig(runs[-1][m]) for m in STUDY_METRICS))
                if progress is not None:
                    progress("study", len(runs), total)
    table = aggregate(runs, cfg.methods, cfg.relations)
    result = {"config": cfg.model_dump(mode="json"), "model_dir": str(model_dir), "table": table,
              "runs": [{k: v for k, v in r.items() if k != "videos"} for r in runs]}
    (folder / RESULTS_JSON).write_text(json.dumps(result, indent=1))
    (folder / REPORT_MD).write_text(report_markdown(table, cfg) + diagnostics_markdown(runs, cfg.methods))
    cv2.imwrite(str(folder / CHART_PNG), bar_chart(table, cfg.methods)[:, :, ::-1])
    write_strips(folder, cfg)
    return result


def aggregate(runs: list[dict[str, Any]], methods: list[str], relations: list[str]) -> dict[str, Any]:
    """Mean and std over seeds per (relation, method) and over all relations' runs ('all')."""
    table: dict[str, Any] = {}
    for relation in [*relations, "all"]:
        for method in methods:
            chosen = [r for r in runs if r["method"] == method and relation in ("all", r["relation"])]
            if not chosen:
                continue
            if relation == "all":  # per seed, average the relations first; the spread is over seeds
                seeds = sorted({r["seed"] for r in chosen})
                values = {m: [np.mean([r[m] for r in chosen if r["seed"] == s]) for s in seeds] for m in STUDY_METRICS}
            else:
                values = {m: [r[m] for r in chosen] for m in STUDY_METRICS}
            table.setdefault(relation, {})[method] = {
                m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for m, v in values.items()
            }
    return table


def report_markdown(table: dict[str, Any], cfg: StudyConfig) -> str:
    """The study tables: one per relation and the average, mean ± std over seeds."""
    lines = ["# Toy-world study", "",
             f"Relations {', '.join(cfg.relations)}; seeds {cfg.seeds}; {cfg.exemplars} exemplars of people; "
             f"{cfg.prompts} held-out non-person prompts; {cfg.train.steps} steps at lr {cfg.train.lr:g} for every method.",
             ""]
    for relation, rows in table.items():
        lines += [f"## {relation}", "", "| method | relation accuracy | subject fidelity | appearance leakage |",
                  "|---|---|---|---|"]
        for method, cells in rows.items():
            lines.append(f"| {method} | " + " | ".join(
                f"{format_sig(cells[m]['mean'])} ± {format_sig(cells[m]['std'])}" for m in STUDY_METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def diagnostics_markdown(runs: list[dict[str, Any]], methods: list[str]) -> str:
    """Per trained method, diagnostics averaged over its runs (relations and seeds)."""
    lines = ["", "## Diagnostics (mean over runs; last half of training)", "",
             "| method | loss per branch | contrastive loss | update norm per adapter | Q-K relation | Q(rel)-V(subj) |",
             "|---|---|---|---|---|---|"]

    def mean(values: list[float | None]) -> str:
        kept = [v for v in values if v is not None]
        return format_sig(float(np.mean(kept))) if kept else "-"

    for method in methods:
        chosen = [r["diagnostics"] for r in runs if r["method"] == method and r.get("diagnostics")]
        if not chosen:
            continue
        branches = sorted({g for d in chosen for g in d["branch_loss"]})
        adapters = sorted({a for d in chosen for a in d["update_norm"]})
        lines.append(
            f"| {method} | " + ", ".join(f"{g} {mean([d['branch_loss'].get(g) for d in chosen])}" for g in branches)
            + f" | {mean([d['rcl_loss'] for d in chosen])} | "
            + ", ".join(f"{a} {mean([d['update_norm'].get(a) for d in chosen])}" for a in adapters)
            + f" | {mean([d['qk_subspace'] for d in chosen])} | {mean([d['qv_subspace'] for d in chosen])} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(table: dict[str, Any], methods: list[str], width: int = 640, height: int = 300) -> np.ndarray:
    """RGB bar chart of the averaged table: one group per metric, one bar per method (± std)."""
    image = np.full((height, width, 3), 255, np.uint8)
    rows = table["all"]
    colours = [(52, 101, 164), (204, 0, 0), (136, 138, 133), (245, 121, 0), (115, 210, 22)]
    group_w = (width - 40) // len(STUDY_METRICS)
    bar_w = max(4, (group_w - 20) // max(1, len(methods)))
    base_y, top = height - 40, 30
    for g, metric in enumerate(STUDY_METRICS):
        x0 = 30 + g * group_w
        cv2.putText(image, metric.replace("_", " "), (x0, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for i, method in enumerate(methods):
            if method not in rows:
                continue
            cell = rows[method][metric]
            x = x0 + i * bar_w
            y = int(base_y - cell["mean"] * (base_y - top))
            cv2.rectangle(image, (x, y), (x + bar_w - 2, base_y), colours[i % len(colours)], -1)
            spread = int(cell["std"] * (base_y - top))
            cv2.line(image, (x + bar_w // 2, y - spread), (x + bar_w // 2, y + spread), (0, 0, 0), 1)
    for i, method in enumerate(methods):
        cv2.rectangle(image, (30 + 110 * i, 8), (40 + 110 * i, 18), colours[i % len(colours)], -1)
        cv2.putText(image, method, (44 + 110 * i, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.line(image, (25, base_y), (width - 10, base_y), (0, 0, 0), 1)
    return image


def write_strips(folder: Path, cfg: StudyConfig | StudyV2Config) -> None:
    """One PNG per (relation, method): rows are prompts, columns frames (seed of the first run)."""
    out = folder / "strips"
    out.mkdir(exist_ok=True)
    for relation in cfg.relations:
        for method in cfg.methods:
            run_dir = folder / "runs" / relation / method / f"seed{cfg.seeds[0]}"
            rows = [np.concatenate(list(np.load(p)), axis=1) for p in sorted(run_dir.glob("strip*.npy"))]
            if rows:
                cv2.imwrite(str(out / f"{relation}-{method}.png"), np.concatenate(rows, axis=0)[:, :, ::-1])
