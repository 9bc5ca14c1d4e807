"""Stage `pretrain_base`: train the toy base model on the world, save it, measure its gates.

Reads nothing but its config; writes into its (resumable) artifact folder:

    work/vae.pt, work/dit_data.pt, work/dit.pt   checkpoints and the encoded training set
    model/                                       the base in the diffusers Mochi layout
    gates.json                                   issue 13 §2 gates, measured on held-out clips

The pipeline then loads `model/` through `model.model_dir` like real Mochi-1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dreamrelation.data.world import sample_specs
from dreamrelation.evaluation.toy import as_records, judge_generations, reconstruction_report, summarize
from dreamrelation.model.mochi import load_pipeline
from dreamrelation.model.pretrain import (
    PretrainConfig,
    build_models,
    dit_data,
    render_set,
    save_base_model,
    set_latent_stats,
    train_dit,
    train_vae,
)

log = logging.getLogger("dreamrelation.pretrain")

MODEL_DIR, WORK_DIR, GATES_FILE = "model", "work", "gates.json"
#: issue 13 §2: the gates the base must pass, (metric, threshold).
GATES = {
    "reconstruction relation accuracy": ("reconstruction", "relation_accuracy", 0.90),
    "reconstruction subject identity": ("reconstruction", "subject_fidelity", 0.90),
    "reconstruction PSNR (aim)": ("reconstruction", "psnr_db", 25.0),
    "generation subject identity": ("generation", "subject_fidelity", 0.70),
    "generation relation accuracy": ("generation", "relation_accuracy", 0.50),
}

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def pretrain_base(cfg: PretrainConfig, folder: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Train (or resume) both phases, save the model folder, measure and write the gates."""
    folder = Path(folder)
    work = folder / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    vae, transformer, text_encoder, tokenizer = build_models(cfg)

    def report(phase: str, total: int) -> Callable[[int, float], None] | None:
        return None if progress is None else (lambda step, _loss: progress(phase, step, total))

    vae_run = train_vae(vae, cfg, work, report("vae", cfg.vae.steps))
    set_latent_stats(vae, cfg)
    data = dit_data(vae, tokenizer, text_encoder, cfg, work)
    dit_run = train_dit(transformer, data, cfg, work, report("dit", cfg.dit.steps))
    model_dir = save_base_model(folder / MODEL_DIR, vae, transformer, text_encoder, tokenizer)
    train_minutes = (time.monotonic() - started) / 60

    recon = reconstruction_report(vae, render_set(cfg, cfg.gates.reconstruction_clips, cfg.world.relations, phase=6))
    prompts = sample_specs(cfg.world, cfg.gates.prompts, relations=cfg.seen_relations, seed=cfg.seed + 7919)
    judged, _ = judge_generations(load_pipeline(model_dir), prompts, cfg.world, cfg.gates.sample,
                                  on_video=None if progress is None else (lambda i, n: progress("gates", i, n)))
    measured = {"reconstruction": recon, "generation": summarize(judged)}
    gates = {name: {"value": float(measured[part][key]), "threshold": limit, "passed": bool(measured[part][key] >= limit)}
             for name, (part, key, limit) in GATES.items()}
    result = {
        "model_dir": str(model_dir),
        "seen_relations": cfg.seen_relations,
        "held_out_relations": cfg.held_out_relations,
        "train_minutes_this_run": round(train_minutes, 1),
        "vae": {"steps": vae_run.steps, "resumed_from": vae_run.resumed_from, "losses": vae_run.losses},
        "dit": {"steps": dit_run.steps, "resumed_from": dit_run.resumed_from, "losses": dit_run.losses},
        "measured": measured,
        "gates": gates,
        "generations": as_records(judged),
    }
    (folder / GATES_FILE).write_text(json.dumps(result, indent=1))
    for name, gate in gates.items():
        log.info("gate %-36s %8.3f (>= %g) %s", name, gate["value"], gate["threshold"], "PASS" if gate["passed"] else "FAIL")
    return result


def gates_table(result: dict[str, Any]) -> str:
    """The gates as a markdown table."""
    rows = [f"| {name} | {g['value']:.3f} | >= {g['threshold']:g} | {'pass' if g['passed'] else 'FAIL'} |"
            for name, g in result["gates"].items()]
    return "\n".join(["| gate | measured | target | |", "|---|---|---|---|", *rows])
