"""The `dreamrelation` command: thin front-end over the flows."""

from __future__ import annotations

import os

# Method code logs to `dreamrelation.*`; route those records into Prefect's run logs (and UI).
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dreamrelation")

import sys  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402

from dreamrelation.config import DEMO_RELATIONS, PipelineConfig, load_config  # noqa: E402
from dreamrelation.plan import STAGES  # noqa: E402

app = typer.Typer(
    help="DreamRelation pipeline: teach Mochi-1 a two-person relation from NTU RGB+D clips.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="Preset name (demo, mochi-1) or YAML file; default: demo")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config value: key.path=value (repeatable)")]
RelationOpt = Annotated[str, typer.Option("--relation", "-r", help="Relation id, e.g. A058 (handshaking)")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rebuild artifacts even if they are complete")]


def _config(config: str | None, overrides: list[str] | None) -> PipelineConfig:
    return load_config(config, overrides) if (config or overrides) else PipelineConfig()


def _report(results) -> None:
    """Print where every artifact went."""
    typer.echo(f"{'relation':<9} {'stage':<15} {'status':<8} artifact")
    for result in results:
        status = "reused" if result.skipped else "built"
        typer.echo(f"{result.relation:<9} {result.stage:<15} {status:<8} {result.uri}")


def _guard(fn, *args, **kwargs):
    """Run a flow; known input errors become one clear line instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, FileNotFoundError, NotImplementedError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    relations: Annotated[str, typer.Option(help="Comma-separated relation ids")] = ",".join(DEMO_RELATIONS),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run the whole DAG on the synthetic NTU-format dataset with tiny models (CPU, offline)."""
    from dreamrelation.flows.pipeline import demo_flow

    cfg = _config(config, set_)
    results = _guard(demo_flow, relations=[r.strip() for r in relations.split(",") if r.strip()], config=cfg, force=force)
    _report([r for stage_results in results.values() for r in stage_results])
    typer.echo(f"\nartifacts under {cfg.root}; synthetic dataset under {cfg.select.dataset_root}")


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
    from dreamrelation.flows.pipeline import STAGE_FLOWS, relation_pipeline

    cfg = _config(config, set_)
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
    from dreamrelation.flows.select_clips import select_clips_flow

    _report([_guard(select_clips_flow, relation=relation, config=_config(config, set_), force=force)])


@app.command()
def captions(relation: RelationOpt = "A058", config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Caption the selected clips of one relation and write the sidecar folder."""
    from dreamrelation.flows.write_captions import write_captions_flow

    _report([_guard(write_captions_flow, relation=relation, config=_config(config, set_), force=force)])


def main() -> None:
    app(prog_name="dreamrelation")


if __name__ == "__main__":
    sys.exit(main())
