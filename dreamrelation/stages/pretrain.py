"""Stage `pretrain_base`: train the toy base model on the world, save it, measure its gates.

Reads nothing but its config; writes into its (resumable) artifact folder:

    work/vae.pt, work/dit_data.pt, work/dit.pt   checkpoints and the encoded training set
    work/phases.json                             keys of the finished VAE and training-set phases
    model/                                       the base in the diffusers Mochi layout
    gates.json                                   issue 13 §2 gates, measured on held-out clips

The pipeline then loads `model/` through `model.model_dir` like real Mochi-1.

A base that differs from a finished one only in its DiT settings (or gates) does not train
the VAE or encode the training set again: the finished phases of a sibling base folder with
the same phase key are copied in first (`adopt_finished_phases`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dreamrelation.data.store import fingerprint
from dreamrelation.data.previews import format_sig
from dreamrelation.data.world import sample_specs
from dreamrelation.evaluation.toy import (
    as_records,
    attribute_reconstruction_report,
    attribute_records,
    attribute_report,
    judge_attributes,
    judge_generations,
    reconstruction_report,
    summarize,
)
from dreamrelation.model.family import TOY_BASE_FILE
from dreamrelation.model.mochi import MOCHI
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

MODEL_DIR, WORK_DIR, GATES_FILE, PHASES_FILE = "model", "work", "gates.json", "phases.json"
#: What identifies an exported base (`export_base`): its fingerprint and how it was made.
#: The reusable phases and the work file each leaves.
PHASE_FILES = {"vae": "vae.pt", "dit_data": "dit_data.pt"}
#: issue 13 §2: the gates the base must pass, (part, metric, direction, threshold).
GATES = {
    "reconstruction relation accuracy": ("reconstruction", "relation_accuracy", ">=", 0.90),
    "reconstruction subject identity": ("reconstruction", "subject_fidelity", ">=", 0.90),
    "reconstruction PSNR (aim)": ("reconstruction", "psnr_db", ">=", 25.0),
    "generation subject identity": ("generation", "subject_fidelity", ">=", 0.70),
    "generation relation accuracy": ("generation", "relation_accuracy", ">=", 0.50),
}
#: issue 21 §3: world v2's gates. Accuracies count prompts that name the attribute; a "largest
#: share" counts the judged videos of prompts that leave it unnamed (no class may take over an
#: unbiased prior): it fails when the share's 95 % Wilson interval lies above 0.5
#: (`evaluation.toy.unnamed_share`; the point share is in `measured`).
GATES_V2 = {
    "reconstruction relation accuracy": ("reconstruction", "relation_accuracy", ">=", 0.95),
    "reconstruction scene accuracy": ("reconstruction", "scene_accuracy", ">=", 0.95),
    "reconstruction body accuracy": ("reconstruction", "body_accuracy", ">=", 0.90),
    "generation scene accuracy": ("generation", "scene_accuracy", ">=", 0.70),
    "generation body accuracy": ("generation", "body_accuracy", ">=", 0.60),
    "generation scale accuracy": ("generation", "scale_accuracy", ">=", 0.75),
    "generation seen relation accuracy": ("generation", "relation_accuracy", ">=", 0.60),
    "unnamed scene: largest class share, 95 % low": ("generation", "scene_unnamed_top_share_low", "<=", 0.5),
    "unnamed body: largest class share, 95 % low": ("generation", "body_unnamed_top_share_low", "<=", 0.5),
    "unnamed scale: largest class share, 95 % low": ("generation", "scale_unnamed_top_share_low", "<=", 0.5),
}

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def phase_keys(cfg: PretrainConfig, text_encoder: torch.nn.Module) -> dict[str, str]:
    """Fingerprints of what the VAE phase and the encoded training set depend on.

    The VAE: world, VAE settings, seed. The training set: that VAE, the clips, the held-out
    relations and the T5's weights (hashed: the random T5 is drawn after the VAE and the DiT, so
    a DiT of another shape gets another T5, and its captions other features).
    """
    vae = fingerprint("pretrain_vae", {"world": cfg.world, "vae": cfg.vae, "seed": cfg.seed}, [], "1")
    t5 = hashlib.sha256()
    for name, tensor in sorted(text_encoder.state_dict().items()):
        t5.update(name.encode())
        t5.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    data = fingerprint("pretrain_dit_data", {"clips": cfg.dit.clips, "held_out_relations": cfg.held_out_relations},
                       [vae, t5.hexdigest()], "1")
    return {"vae": vae, "dit_data": data}


def _recorded_phases(work: Path) -> dict[str, str]:
    path = work / PHASES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _record_phase(work: Path, name: str, key: str) -> None:
    phases = {**_recorded_phases(work), name: key}
    tmp = work / f".{PHASES_FILE}.partial"
    tmp.write_text(json.dumps(phases, indent=1))
    os.replace(tmp, work / PHASES_FILE)


def adopt_finished_phases(folder: Path, keys: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """Copy into `folder/work` each phase in `names` that it lacks and a sibling base folder
    (same parent) finished under the same key. Returns {phase: the sibling it came from}."""
    work = folder / WORK_DIR
    adopted = {}
    for name in names:
        target = work / PHASE_FILES[name]
        if target.exists():
            continue
        for other in sorted(folder.parent.glob(f"*/{WORK_DIR}/{PHASES_FILE}")):
            source = other.parent / PHASE_FILES[name]
            if other.parent != work and _recorded_phases(other.parent).get(name) == keys[name] and source.is_file():
                tmp = work / f".{target.name}.partial"
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
                _record_phase(work, name, keys[name])
                adopted[name] = other.parent.parent.name
                log.info("%s: reusing the finished phase of %s (same key %s)", name, adopted[name], keys[name])
                break
    return adopted


def pretrain_base(cfg: PretrainConfig, folder: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Train (or resume, or adopt from a sibling base) both phases, save the model folder, measure
    and write the gates."""
    folder = Path(folder)
    work = folder / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    vae, transformer, text_encoder, tokenizer = build_models(cfg)
    keys = phase_keys(cfg, text_encoder)

    def report(phase: str, total: int) -> Callable[[int, float], None] | None:
        return None if progress is None else (lambda step, _loss: progress(phase, step, total))

    adopted = adopt_finished_phases(folder, keys, ("vae", "dit_data"))
    vae_run = train_vae(vae, cfg, work, report("vae", cfg.vae.steps))
    _record_phase(work, "vae", keys["vae"])
    set_latent_stats(vae, cfg)
    data = dit_data(vae, tokenizer, text_encoder, cfg, work)
    _record_phase(work, "dit_data", keys["dit_data"])
    dit_run = train_dit(transformer, data, cfg, work, report("dit", cfg.dit.steps))
    model_dir = save_base_model(folder / MODEL_DIR, vae, transformer, text_encoder, tokenizer)
    train_minutes = (time.monotonic() - started) / 60

    clips = render_set(cfg, cfg.gates.reconstruction_clips, cfg.world.relations, phase=6)
    prompts = sample_specs(cfg.world, cfg.gates.prompts, relations=cfg.seen_relations, seed=cfg.seed + 7919)
    pipe = MOCHI.load_pipeline(model_dir)
    on_video = None if progress is None else (lambda i, n: progress("gates", i, n))
    if cfg.world.version == 1:
        judged, _ = judge_generations(pipe, prompts, cfg.world, cfg.gates.sample, on_video=on_video)
        measured = {"reconstruction": reconstruction_report(vae, clips), "generation": summarize(judged)}
        records, table = as_records(judged), GATES
    else:
        judged_v2, _ = judge_generations(pipe, prompts, cfg.world, cfg.gates.sample, on_video=on_video,
                                         judge=judge_attributes)
        measured = {"reconstruction": attribute_reconstruction_report(vae, clips),
                    "generation": attribute_report(judged_v2)}
        records, table = attribute_records(judged_v2), GATES_V2
    gates = {name: gate(measured[part][key], direction, limit) for name, (part, key, direction, limit) in table.items()}
    result = {
        "model_dir": str(model_dir),
        "seen_relations": cfg.seen_relations,
        "held_out_relations": cfg.held_out_relations,
        "train_minutes_this_run": round(train_minutes, 1),
        "adopted_phases": adopted,
        "vae": {"steps": vae_run.steps, "resumed_from": vae_run.resumed_from, "losses": vae_run.losses},
        "dit": {"steps": dit_run.steps, "resumed_from": dit_run.resumed_from, "losses": dit_run.losses},
        "measured": measured,
        "gates": gates,
        "generations": records,
    }
    (folder / GATES_FILE).write_text(json.dumps(result, indent=1))
    for name, g in gates.items():
        log.info("gate %-38s %8s (%s %g) %s", name, format_sig(g["value"], missing="-"), g.get("direction", ">="),
                 g["threshold"], "PASS" if g["passed"] else "FAIL")
    return result


def gate(value: float | None, direction: str, threshold: float) -> dict[str, Any]:
    """One gate's record: passed when the value is measured and on the right side of the threshold."""
    passed = value is not None and (value >= threshold if direction == ">=" else value <= threshold)
    return {"value": None if value is None else float(value), "direction": direction, "threshold": threshold,
            "passed": bool(passed)}


def gates_table(result: dict[str, Any]) -> str:
    """The gates as a markdown table."""
    rows = [f"| {name} | {format_sig(g['value'], missing='-')} | {g.get('direction', '>=')} {g['threshold']:g} | "
            f"{'pass' if g['passed'] else 'FAIL'} |" for name, g in result["gates"].items()]
    return "\n".join(["| gate | measured | target | |", "|---|---|---|---|", *rows])


class ExportError(ValueError):
    """A folder `export_base` must not replace; the message says why."""


def export_base(folder: str | Path, out: str | Path, base_fingerprint: str) -> Path:
    """Copy a finished toy base for the repository (issue 22 §1): float16 safetensors, a few MB.

    `out` gets `model/` (the diffusers layout; the loaders cast the float16 weights to the run's
    dtype), `gates.json` (the gates and what they measured, without the per-step losses) and
    `base.json` (the fingerprint `dreamrelation pretrain` gives this config: a test compares it
    with today's default, so a changed world or base config says "export again"). `out` must be
    new, empty or an earlier export, which is replaced as a whole; it is written beside `out`
    first, so a failed export leaves the earlier one in place.
    """
    folder, out = Path(folder), Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / TOY_BASE_FILE).is_file())):
        raise ExportError(f"{out} exists and is not an earlier toy-base export (no {TOY_BASE_FILE}); "
                          "export into a new or empty folder")
    if not (folder / GATES_FILE).is_file():
        raise ExportError(f"{folder} is not a finished toy base (no {GATES_FILE})")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = MOCHI.load_pipeline(folder / MODEL_DIR)
    for component in (pipe.transformer, pipe.vae, pipe.text_encoder):
        component.to(torch.float16)  # per model: a float16 *pipeline* on CPU makes diffusers warn
    pipe.save_pretrained(tmp / MODEL_DIR, safe_serialization=True)
    result = json.loads((folder / GATES_FILE).read_text())
    kept = {name: result[name] for name in ("seen_relations", "held_out_relations", "measured", "gates")}
    (tmp / GATES_FILE).write_text(json.dumps(kept, indent=1) + "\n")
    meta = {"fingerprint": base_fingerprint, "dtype": "float16",
            "made_by": "dreamrelation pretrain --export DIR (default ToyConfig)"}
    (tmp / TOY_BASE_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out
