"""The `dreamrelation` command: thin front-end over the flows.

The flows (Prefect, torch, diffusers) are imported inside the commands that run them
(`# deferred: fast --help`), so `dreamrelation --help` and input errors answer at once.
"""

from __future__ import annotations

import os

# Method code logs to `dreamrelation.*`; route those records into Prefect's run logs (and UI).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dreamrelation")
# ... and stay quiet about records logged outside a flow run (e.g. `dreamrelation sample`).
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import logging  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402

from dreamrelation.config import (  # noqa: E402
    ALL,
    DEMO_RELATIONS,
    PipelineConfig,
    ToyConfig,
    load_config,
    load_toy_config,
    relation_table,
    relations_to_run,
)
from dreamrelation.data.own_folder_demo import DemoFolderError, export_own_folder_demo  # noqa: E402
from dreamrelation.data.store import ArtifactStore, fetch_local  # noqa: E402
from dreamrelation.flows.server_guard import guard_children  # noqa: E402
from dreamrelation.plan import STAGES, plan_relation  # noqa: E402

app = typer.Typer(
    help="DreamRelation pipeline: teach Mochi-1 a two-person relation from NTU RGB+D clips.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Where `demo --own-folder` exports its folder dataset (the own-folder preset reads it from there).
OWN_FOLDER_DEMO = ".dreamrelation/demo/own-folder"
ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="Preset name (demo, mochi-1, own-folder) or YAML file; default: demo")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config value: key.path=value (repeatable)")]
RelationOpt = Annotated[str, typer.Option("--relation", "-r", help="Relation id, e.g. A058 (handshaking), or a folder dataset's folder name")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild artifacts even if they are complete")]


def _config(config: str | None, overrides: list[str] | None, relations: list[str] | None = None) -> PipelineConfig:
    """Load and validate the config (and relation ids) before any flow or server starts."""
    try:
        cfg = load_config(config, overrides) if (config or overrides) else PipelineConfig()
        relations_to_run(cfg, relations or [])
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    return cfg


def _report(results) -> None:
    """Print where every artifact went."""
    typer.echo(f"{'relation':<9} {'stage':<15} {'status':<8} artifact")
    for result in results:
        status = "reused" if result.skipped else "built"
        typer.echo(f"{result.relation:<9} {result.stage:<15} {status:<8} {result.uri}")


USER_ERRORS = (ValueError, FileNotFoundError, NotImplementedError)


class _NoTracebackForInputErrors(logging.Filter):
    """Console only: a failed run caused by bad input logs its message, not a library traceback.

    The Prefect API (and so the UI) still receives the full traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_console_tracebacks() -> None:
    from prefect.logging.configuration import setup_logging  # deferred: fast --help

    setup_logging()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoTracebackForInputErrors())


def _guard(fn, *args, **kwargs):
    """Run a flow; known input errors become one clear line instead of a traceback.

    Without PREFECT_API_URL the flow runs against a temporary Prefect server, a child process
    that must not outlive the CLI, even a killed one: `guard_children` ends it then.
    """
    from prefect.settings import PREFECT_API_URL  # deferred: fast --help

    _quiet_console_tracebacks()
    if not PREFECT_API_URL.value():
        guard_children()
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    relations: Annotated[
        Optional[str], typer.Option(help="Comma-separated relation ids (default: the demo's, or every folder)")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    own_folder: Annotated[
        bool,
        typer.Option("--own-folder", help="Export toy-world clips as a plain folder of videos (captions, masks) "
                     f"to {OWN_FOLDER_DEMO} and run the pipeline on it (preset own-folder)"),
    ] = False,
) -> None:
    """Run the whole DAG on the synthetic NTU-format dataset with tiny models (CPU, offline)."""
    from dreamrelation.flows.pipeline import demo_flow  # deferred: fast --help

    if own_folder:
        if config is not None:
            typer.secho("error: --own-folder uses the own-folder preset; change it with -s", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        config = "own-folder"
        try:
            typer.echo(f"own-folder demo dataset: {export_own_folder_demo(OWN_FOLDER_DEMO)}")
        except (DemoFolderError, OSError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    chosen = [r.strip() for r in relations.split(",") if r.strip()] if relations else None
    cfg = _config(config, set_, chosen)
    if chosen is None:
        chosen = DEMO_RELATIONS if cfg.select.source == "ntu" else list(relation_table(cfg))
    results, report_uri = _guard(demo_flow, relations=chosen, config=cfg, force=force)
    _report([r for stage_results in results.values() for r in stage_results])
    typer.echo(f"\nartifacts under {cfg.root}; dataset under {cfg.select.dataset_root}")
    typer.echo(f"evaluation report across relations: {report_uri}/report.md")


@app.command()
def run(
    relation: RelationOpt = "A058",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    stage: Annotated[Optional[str], typer.Option(help=f"Run only this stage: {', '.join(STAGES)}")] = None,
    stop_after: Annotated[Optional[str], typer.Option(help="Stop after this stage")] = None,
    force: ForceOpt = False,
) -> None:
    """Run the pipeline (or one stage) for one relation."""
    from dreamrelation.flows.pipeline import STAGE_FLOWS, relation_pipeline  # deferred: fast --help

    cfg = _config(config, set_, [relation])
    if stage is None:
        results = _guard(relation_pipeline, relation=relation, config=cfg, force=force, stop_after=stop_after)
    elif stage in STAGE_FLOWS:
        results = [_guard(STAGE_FLOWS[stage], relation=relation, config=cfg, force=force)]
    else:
        typer.secho(f"error: unknown stage {stage!r}; stages: {', '.join(STAGES)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    _report(results)


@app.command()
def select(relation: RelationOpt = "A058", config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Select the training clips of one relation and write the manifest."""
    from dreamrelation.flows.select_clips import select_clips_flow  # deferred: fast --help

    _report([_guard(select_clips_flow, relation=relation, config=_config(config, set_, [relation]), force=force)])


@app.command()
def captions(relation: RelationOpt = "A058", config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Caption the selected clips of one relation and write the sidecar folder."""
    from dreamrelation.flows.write_captions import write_captions_flow  # deferred: fast --help

    _report([_guard(write_captions_flow, relation=relation, config=_config(config, set_, [relation]), force=force)])


@app.command()
def evaluate(relation: RelationOpt = "A058", config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Generate evaluation videos and score them (needs the relation's finished training run)."""
    from dreamrelation.flows.evaluate import evaluate_flow  # deferred: fast --help

    result = _guard(evaluate_flow, relation=relation, config=_config(config, set_, [relation]), force=force)
    _report([result])
    typer.echo(f"\nreport: {result.uri}/report.md")


@app.command()
def report(
    relations: Annotated[str, typer.Option(help="Comma-separated relation ids")] = ",".join(DEMO_RELATIONS),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Combine finished evaluations into one Table 1 report (per relation and averaged)."""
    from dreamrelation.flows.evaluate import evaluation_report_flow  # deferred: fast --help

    chosen = [r.strip() for r in relations.split(",") if r.strip()]
    uri = _guard(evaluation_report_flow, relations=chosen, config=_config(config, set_, chosen))
    typer.echo(f"report: {uri}/report.md")


@app.command("analyze-qkv")
def analyze_qkv(
    model_dir: Annotated[Optional[str], typer.Option(help="Transformer or pipeline folder; default: the config's model")] = None,
    rank: Annotated[int, typer.Option(help="Subspace rank r (top-r left singular vectors)")] = 16,
    out_dir: Annotated[str, typer.Option(help="Where qkv_similarity.json and .png go")] = ".dreamrelation/analysis/qkv",
    device: Annotated[str, typer.Option(help="Torch device for the SVDs")] = "cpu",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Subspace similarity of every block's Q, K and V weights (METHOD.md §7): JSON + heatmap."""
    from dreamrelation.flows.analysis import qkv_analysis, summary_markdown  # deferred: fast --help

    cfg = _config(config, set_)
    summary = _guard(qkv_analysis, model_dir=model_dir, rank=rank, out_dir=out_dir, device=device, model=cfg.model)
    typer.echo(summary_markdown(summary))
    typer.echo(f"\nwrote {summary['json']} and {summary['png']}")


@app.command()
def sample(
    prompt: Annotated[str, typer.Option(help="What to generate")] = "A bear is shaking hands with a raccoon in a meadow.",
    lora: Annotated[Optional[str], typer.Option(help="Inference LoRA .safetensors (default: the relation's trained one)")] = None,
    relation: Annotated[Optional[str], typer.Option("--relation", "-r", help="Use this relation's trained LoRA")] = None,
    base_only: Annotated[bool, typer.Option("--base-only", help="Sample the base model without any LoRA")] = False,
    out: Annotated[str, typer.Option(help="Output mp4 path")] = "sample.mp4",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate one video with the base model + relation LoRA through MochiPipeline (settings: train.sample.*)."""
    from dreamrelation.model.sample import sample_video  # deferred: fast --help
    from dreamrelation.model.train import LORA_FILE  # deferred: fast --help

    cfg = _config(config, set_, [relation] if relation else None)
    if base_only:
        lora = None
    elif lora is None:
        if relation is None:
            typer.secho("error: give --lora PATH, --relation ID (its trained LoRA) or --base-only", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        store = ArtifactStore(cfg.root)
        run = _guard(store.require, plan_relation(relation, cfg)["train_relation"].key)
        lora = str(fetch_local(f"{run}/{LORA_FILE}"))  # a download when the root is remote
    elif not Path(lora).is_file():
        typer.secho(f"error: LoRA file {lora} does not exist", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    _, path = _guard(sample_video, prompt, lora, out, cfg.train.sample, cfg.model)
    typer.echo(f"wrote {path}")


@app.command()
def serve(
    limit: Annotated[int, typer.Option(help="Flow runs at once on this machine (1 = one stage at a time on one GPU)")] = 1,
    deployment: Annotated[
        Optional[list[str]], typer.Option("--deployment", "-d", help="Serve only this deployment (repeatable); default: all")
    ] = None,
) -> None:
    """Serve the pipeline and stage deployments from this machine, without a work pool.

    Same deployment names and per-relation triggers as prefect.yaml.
    Needs a Prefect API: PREFECT_API_URL (e.g. of `prefect server start`).
    Start runs from the UI, or: prefect deployment run select-clips/select-clips --param relation=A058
    Ctrl-C stops serving.
    """
    from dreamrelation.flows.serve import serve_all  # deferred: fast --help

    _guard(serve_all, limit=limit, names=deployment)


@app.command("fan-out")
def fan_out(
    relations: Annotated[str, typer.Option(help="Comma-separated relation ids, or 'all' (the 26 NTU two-person actions, or every folder of a folder dataset)")] = "all",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    stop_after: Annotated[Optional[str], typer.Option(help="Each pipeline stops after this stage")] = None,
    force: ForceOpt = False,
    deployment: Annotated[str, typer.Option(help="The per-relation pipeline deployment to run")] = "relation-pipeline/relation-pipeline",
    poll_seconds: Annotated[float, typer.Option(help="Seconds between state checks")] = 15.0,
) -> None:
    """Start one pipeline deployment run per relation (in parallel on the pool's workers), wait, report.

    Needs the deployments (`prefect deploy --all` or `dreamrelation serve`) and running workers.
    With workers on several machines, use an object-store root: -s root=s3://bucket/prefix
    """
    from dreamrelation.flows.fanout import ALL_RELATIONS, FanOutError, fan_out_flow  # deferred: fast --help

    chosen = ALL_RELATIONS if relations.strip().lower() == ALL else [r.strip() for r in relations.split(",") if r.strip()]
    try:
        _guard(
            fan_out_flow,
            relations=chosen,
            config=_config(config, set_, chosen),
            force=force,
            stop_after=stop_after,
            deployment=deployment,
            poll_seconds=poll_seconds,
        )
    except FanOutError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _toy_config(config: str | None, overrides: list[str] | None, quick: bool = False) -> ToyConfig:
    try:
        cfg = load_toy_config(config, overrides)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    return cfg.quick() if quick else cfg


ToyConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="YAML file of toy settings (ToyConfig); default: built-in")]


@app.command()
def pretrain(config: ToyConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Train the toy base model on the relational toy world (VAE, then DiT; ~50 min on 2 cores; resumable).

    Writes a Mochi-layout model folder usable as model.model_dir, and its gates (gates.json).
    """
    from dreamrelation.flows.toy import pretrain_base_flow  # deferred: fast --help

    cfg = _toy_config(config, set_)
    result = _guard(pretrain_base_flow, config=cfg, force=force)
    _report([result])
    typer.echo(f"\nmodel folder: {result.uri}/model\ngates: {result.uri}/gates.json")


@app.command()
def study(
    quick: Annotated[bool, typer.Option("--quick", help="One relation, one seed, 8 prompts (a smoke run)")] = False,
    config: ToyConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """The toy-world study: DreamRelation vs direct LoRA vs ablations on unseen subjects (pretrains first)."""
    from dreamrelation.flows.toy import study_flow  # deferred: fast --help

    cfg = _toy_config(config, set_, quick)
    results = _guard(study_flow, config=cfg, force=force)
    _report(results)
    typer.echo(f"\nreport: {results[-1].uri}/study.md")


def main() -> None:
    # diffusers' Mochi RoPE asks for float32 CPU autocast on every forward pass (harmless).
    warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
    app(prog_name="dreamrelation")


if __name__ == "__main__":
    sys.exit(main())
