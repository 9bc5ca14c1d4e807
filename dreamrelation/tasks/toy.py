"""Tasks of the toy-world stages: pretrain the toy base, run the study (issue 13 §2, §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from dreamrelation.config import ToyConfig
from dreamrelation.data.store import ArtifactStore
from dreamrelation.plan import TOY, plan_toy
from dreamrelation.stages.pretrain import MODEL_DIR, gates_table, pretrain_base
from dreamrelation.stages.study import REPORT_MD, run_study
from dreamrelation.stages.study_v2 import run_study_v2
from dreamrelation.tasks.common import StageResult, run_stage
from dreamrelation.tasks.ui import Progress, artifact_key


class _PhaseProgress:
    """One progress artifact per phase name, created when the phase first reports."""

    def __init__(self, totals: dict[str, int]):
        self.bars = {name: Progress(artifact_key(TOY, name), total, f"{name} steps") for name, total in totals.items()}

    def __call__(self, phase: str, done: int, total: int) -> None:
        bar = self.bars.setdefault(phase, Progress(artifact_key(TOY, phase), total, phase))
        bar.start().update(done)


@task(name="pretrain-toy-base", cache_policy=NO_CACHE)
def pretrain_base_task(config: ToyConfig, force: bool = False) -> StageResult:
    """Train (or resume, or reuse) the toy base model; its gates become a markdown artifact."""
    store = ArtifactStore(config.root)
    artifact = plan_toy(config)["pretrain_base"]
    p = config.pretrain
    progress = _PhaseProgress({"vae": p.vae.steps, "dit": p.dit.steps, "gates": p.gates.prompts})

    def build(folder: str, summary: dict[str, Any]) -> None:
        result = pretrain_base(p, folder, progress)
        create_markdown_artifact(key=artifact_key(TOY, "base-gates"), markdown=gates_table(result),
                                 description="Toy base model: gates on held-out world clips (issue 13 §2)")
        summary.update(model_dir=result["model_dir"], gates={k: g["passed"] for k, g in result["gates"].items()})

    return run_stage(store, artifact, build, force, resumable=True)


@task(name="toy-study", cache_policy=NO_CACHE)
def study_task(config: ToyConfig, force: bool = False) -> StageResult:
    """Train and judge every method on the toy base; the report becomes a markdown artifact."""
    store = ArtifactStore(config.root)
    plan = plan_toy(config)
    store.require(plan["pretrain_base"].key)
    model_dir = store.local_path(plan["pretrain_base"].key) / MODEL_DIR

    def build(folder: str, summary: dict[str, Any]) -> None:
        result = run_study(config.study, model_dir, config.pretrain.world, folder, _PhaseProgress({}))
        create_markdown_artifact(key=artifact_key(TOY, "study"), markdown=(Path(folder) / REPORT_MD).read_text(),
                                 description="Toy-world study: methods compared (issue 13 §4)")
        summary.update(table=result["table"].get("all", {}))

    return run_stage(store, plan["study"], build, force, resumable=True)


@task(name="toy-study-v2", cache_policy=NO_CACHE)
def study_v2_task(config: ToyConfig, force: bool = False) -> StageResult:
    """The study, round two (issue 21): leak probe, every method at every eval step, intervals."""
    store = ArtifactStore(config.root)
    plan = plan_toy(config)
    store.require(plan["pretrain_base"].key)
    model_dir = store.local_path(plan["pretrain_base"].key) / MODEL_DIR

    def build(folder: str, summary: dict[str, Any]) -> None:
        result = run_study_v2(config.study_v2, model_dir, config.pretrain.world, folder, _PhaseProgress({}))
        create_markdown_artifact(key=artifact_key(TOY, "study-v2"), markdown=(Path(folder) / REPORT_MD).read_text(),
                                 description="Toy-world study, round two: leakage against relation accuracy (issue 21)")
        summary.update(stopped=result["stopped"], probe=result["probe"], verdicts=result.get("verdicts"))

    return run_stage(store, plan["study_v2"], build, force, resumable=True)
