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
# The temporary server started when no PREFECT_API_URL is set sends no usage analytics: offline,
# each attempt logged an ERROR on every run.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, NoReturn, Optional  # noqa: E402

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
from dreamrelation.data.store import ArtifactStore, DiskFullError, fetch_local, release_held_locks  # noqa: E402
from dreamrelation.flows.server_guard import guard_children  # noqa: E402
from dreamrelation.model import CPU_AUTOCAST_WARNING  # noqa: E402
from dreamrelation.plan import STAGES, plan_relation  # noqa: E402

app = typer.Typer(
    help="DreamRelation pipeline: teach Mochi-1 a two-person relation from NTU RGB+D clips.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Where `demo --own-folder` exports its folder dataset (the own-folder preset reads it from there).
OWN_FOLDER_DEMO = ".dreamrelation/demo/own-folder"
ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="Preset name (demo, mochi-1, wan-demo, wan2.1-t2v-1.3b, ... see configs/) or YAML file; default: demo")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config value: key.path=value (repeatable)")]
RelationOpt = Annotated[str, typer.Option("--relation", "-r", help="Relation id, e.g. A058 (handshaking), or a folder dataset's folder name")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild artifacts even if they are complete")]


def _config(config: str | None, overrides: list[str] | None, relations: list[str] | None = None) -> PipelineConfig:
    """Load and validate the config (and relation ids) before any flow or server starts."""
    try:
        cfg = load_config(config, overrides) if (config or overrides) else PipelineConfig()
        if relations:  # a command that names no relation (sample --lora, analyze-qkv) reads no dataset
            relations_to_run(cfg, relations)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    return cfg


def _fail(message: str) -> NoReturn:
    """One red `error:` line and exit code 2: bad input, found before anything ran."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _report(results) -> None:
    """Print where every artifact went (the table the pipeline and demo flows also log)."""
    from dreamrelation.tasks.summary import stage_table  # deferred: fast --help

    typer.echo(stage_table(results))


#: Left-out clips named one by one under the final table, per relation and stage; the others are counted.
MAX_LEFT_OUT_LINES = 10
#: The reason selection gives usable clips beyond select.clips_per_relation (counted, not listed).
NOT_SAMPLED = "usable, not sampled"


def _report_left_out(results) -> None:
    """Print, under the final table, the clips each relation left out and why (issue 24 §5).

    Selection's dropped clips come from its manifest (read only when its summary counts some;
    usable clips beyond `select.clips_per_relation` are counted, not listed); training's from its
    summary (`left_out`); without a training result, the clips make_masks / encode_latents failed.
    """
    lines: list[str] = []
    trained = {r.relation for r in results if r.stage == "train_relation"}
    for result in results:
        where = f"{result.relation} {result.stage}"
        if result.stage == "select_clips" and result.summary.get("dropped", 1):
            from dreamrelation.data.manifest import read_manifest  # deferred: read only when clips were dropped

            try:
                dropped = read_manifest(result.uri).dropped
            except (OSError, ValueError):
                lines.append(f"{where}: {result.summary.get('dropped', 'some')} clip(s) dropped, see {result.uri}")
                continue
            reasons = {d.clip_id: d.reason for d in dropped if d.reason != NOT_SAMPLED}
            lines += _left_out_lines(where, reasons, result.uri)
            unsampled = len(dropped) - len(reasons)
            if unsampled:
                lines.append(f"{where}: {unsampled} more usable clip(s) not sampled (select.clips_per_relation)")
        elif result.stage == "train_relation":
            lines += _left_out_lines(where, result.summary.get("left_out") or {}, result.uri)
        elif result.stage in ("encode_latents", "make_masks") and result.relation not in trained:
            lines += _left_out_lines(where, result.summary.get("reasons") or {}, result.uri)
    if lines:
        typer.echo("\nclips left out, and why:")
        for line in lines:
            typer.echo(f"  {line}")


def _left_out_lines(where: str, reasons: dict[str, str], uri: str) -> list[str]:
    lines = [f"{where}: {clip}: {reason}" for clip, reason in list(reasons.items())[:MAX_LEFT_OUT_LINES]]
    if len(reasons) > MAX_LEFT_OUT_LINES:
        lines.append(f"{where}: ... and {len(reasons) - MAX_LEFT_OUT_LINES} more, listed in {uri}")
    return lines


USER_ERRORS = (ValueError, FileNotFoundError, NotImplementedError)
#: Errors of the machine, not of the input (a full disk): one line too, exit code 1.
MACHINE_ERRORS = (DiskFullError,)
#: The exit status of a command ended by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Prefect's default (20 s) is too short for its temporary server on a loaded 2-core machine.
SERVER_START_SECONDS = 90
INTERRUPTED_LINE = "interrupted: stopped; run the same command again to resume (finished work is kept)"


class _NoTracebackForInputErrors(logging.Filter):
    """Console only: a failed run caused by bad input logs its message, not a library traceback.

    The Prefect API (and so the UI) still receives the full traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], (*USER_ERRORS, *MACHINE_ERRORS, KeyboardInterrupt)):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_console_tracebacks() -> None:
    from prefect.logging.configuration import setup_logging  # deferred: fast --help

    setup_logging()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoTracebackForInputErrors())


def _stop_at_once(signum: int, frame: object) -> None:
    """Ctrl-C with a temporary Prefect server: end now, with one line and exit code 130.

    The terminal sends SIGINT to the whole process group, the temporary server included, so
    Prefect's client would spend minutes retrying a dead server to report the interruption.
    Nothing needs that report: artifacts are complete only once their marker is written, the
    next build of a key removes its stale temporaries, training resumes from its last
    checkpoint and evaluation keeps its finished videos. The lock files this process holds are
    removed on the way out; the watchdog of `guard_children` ends the server.
    """
    release_held_locks()
    sys.stderr.write(f"\n{INTERRUPTED_LINE}\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED)


def _start_temporary_server() -> None:
    """Start Prefect's temporary server now, as a child that never sees Ctrl-C.

    The terminal sends SIGINT to the whole foreground process group. The server is started
    with SIGINT blocked (a blocked signal mask survives exec), so Ctrl-C reaches only this
    process (`_stop_at_once`); the server prints nothing and is ended by the watchdog. Prefect's
    client asks `SubprocessASGIServer()` for its server and gets this running one (one instance
    per port; `tests/test_run_safety.py` checks that Prefect still works that way).
    """
    from prefect.server.api.server import SubprocessASGIServer  # deferred: fast --help
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS  # deferred: fast --help

    class DeafToCtrlC(SubprocessASGIServer):
        def _run_uvicorn_command(self):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                return super()._run_uvicorn_command()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    timeout = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), SERVER_START_SECONDS)
    try:
        DeafToCtrlC().start(timeout=timeout)
    except RuntimeError:
        typer.secho(
            f"error: Prefect's temporary server did not answer within {timeout} s (a busy machine?); run again, "
            "or start one with `prefect server start` and set PREFECT_API_URL",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from None


def _guard(fn, *args, **kwargs):
    """Run a flow; known input errors become one clear line instead of a traceback.

    Without PREFECT_API_URL the flow runs against a temporary Prefect server, a child process
    that must not outlive the CLI, even a killed one: `guard_children` ends it then, and Ctrl-C
    ends the command at once (`_stop_at_once`). With a real server, Ctrl-C takes Prefect's own
    path (the run is reported as crashed) and ends with the same line and exit code.
    """
    from prefect.settings import PREFECT_API_URL  # deferred: fast --help

    _quiet_console_tracebacks()
    if PREFECT_API_URL.value():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Prefect reports the interruption
    else:
        guard_children()
        _start_temporary_server()
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except MACHINE_ERRORS as exc:
        typer.secho(f"error: {exc.strerror}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.secho(f"\n{INTERRUPTED_LINE}", err=True)
        raise typer.Exit(INTERRUPTED) from None


@app.command()
def demo(
    relations: Annotated[
        Optional[str], typer.Option(help="Comma-separated relation ids (default: the generated dataset's relations, or every folder)")
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
    if chosen is None:  # the generated dataset's relations, the demo's, or every folder
        if cfg.synthetic is not None:
            chosen = list(cfg.synthetic.relations)
        else:
            chosen = DEMO_RELATIONS if cfg.select.source == "ntu" else list(relation_table(cfg))
    results, report_uri = _guard(demo_flow, relations=chosen, config=cfg, force=force)
    _report([r for stage_results in results.values() for r in stage_results])
    _report_left_out([r for stage_results in results.values() for r in stage_results])
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

    if relation.strip().lower() == ALL:
        _fail("run takes one relation; for several use `dreamrelation demo --relations A058,A055`, "
              "or `dreamrelation fan-out --relations all` to run every relation on the pool's workers")
    for name, value in (("--stop-after", stop_after), ("--stage", stage)):
        if value is not None and value not in STAGES:
            _fail(f"{name} {value!r} is not a stage; stages: {', '.join(STAGES)}")
    cfg = _config(config, set_, [relation])
    if stage is None:
        results = _guard(relation_pipeline, relation=relation, config=cfg, force=force, stop_after=stop_after)
    else:
        results = [_guard(STAGE_FLOWS[stage], relation=relation, config=cfg, force=force)]
    _report(results)
    _report_left_out(results)


@app.command()
def select(relation: RelationOpt = "A058", config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Select the training clips of one relation and write the manifest."""
    from dreamrelation.flows.select_clips import select_clips_flow  # deferred: fast --help

    results = [_guard(select_clips_flow, relation=relation, config=_config(config, set_, [relation]), force=force)]
    _report(results)
    _report_left_out(results)


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
    model_dir: Annotated[Optional[str], typer.Option(help="Mochi or Wan transformer or pipeline folder; default: the config's model")] = None,
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
    elif Path(lora).is_dir():
        if not (Path(lora) / LORA_FILE).is_file():
            _fail(f"--lora {lora} is a folder without {LORA_FILE}: give the .safetensors file, "
                  "or a training run folder (relations/<id>/runs/train-<fp>)")
        lora = str(Path(lora) / LORA_FILE)
    elif not Path(lora).is_file():
        _fail(f"LoRA file {lora} does not exist")
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

    from prefect.settings import PREFECT_API_URL  # deferred: fast --help

    if not PREFECT_API_URL.value():
        _fail("fan-out starts runs of deployments on a Prefect server: start one (`prefect server start`), set "
              "PREFECT_API_URL, create the deployments (`prefect deploy --all` or `dreamrelation serve`); "
              "on this machine alone, `dreamrelation demo --relations A058,A055` runs several relations")
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
def pretrain(
    config: ToyConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
    export: Annotated[
        Optional[Path],
        typer.Option(help="Then copy the base as float16 to this folder (new, empty, or an earlier export, "
                     "which is replaced): how toy-base/ in the repository is made"),
    ] = None,
) -> None:
    """Train the toy base model on the relational toy world (VAE, then DiT; ~50 min on 2 cores; resumable).

    Writes a Mochi-layout model folder usable as model.model_dir, and its gates (gates.json).
    """
    from dreamrelation.flows.toy import pretrain_base_flow  # deferred: fast --help
    from dreamrelation.stages.pretrain import ExportError, export_base  # deferred: heavy (torch)

    cfg = _toy_config(config, set_)
    result = _guard(pretrain_base_flow, config=cfg, force=force)
    _report([result])
    typer.echo(f"\nmodel folder: {result.uri}/model\ngates: {result.uri}/gates.json")
    if export is not None:
        try:
            out = export_base(result.uri, export, result.fingerprint)
        except (ExportError, OSError) as exc:
            _fail(str(exc))
        typer.echo(f"exported (float16): {out}")


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
    summary = results[-1].summary
    if summary.get("stopped"):
        typer.echo("\nstopped at the leak probe: no method was compared")
    for claim, verdict in (summary.get("verdicts") or {}).items():
        typer.echo(f"{claim}: {verdict}")
    typer.echo(f"\nreport: {results[-1].uri}/study.md")


def main() -> None:
    signal.signal(signal.SIGINT, _stop_at_once)  # from the first moment: Ctrl-C during imports too
    warnings.filterwarnings("ignore", message=CPU_AUTOCAST_WARNING)
    app(prog_name="dreamrelation")


if __name__ == "__main__":
    sys.exit(main())
