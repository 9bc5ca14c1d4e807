"""The `dreamrelation` command: help on every subcommand, bad input as one clear line."""

import pytest
from typer.testing import CliRunner

# Prefect binds its console log handler to sys.stderr when flows are first imported: import them
# here, not inside CliRunner's temporary (later closed) streams.
import dreamrelation.flows.pipeline  # noqa: F401
from dreamrelation.flows.cli import app

runner = CliRunner()
COMMANDS = ["demo", "run", "select", "captions", "evaluate", "report", "analyze-qkv", "serve", "fan-out", "sample"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    result = runner.invoke(app, [command, "--help"], prog_name="dreamrelation")
    assert result.exit_code == 0, result.output
    assert "Usage: dreamrelation " + command in " ".join(result.output.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["select", "-r", "A999"], "unknown relation 'A999'"),
        (["run", "-r", "A058", "-s", "video.num_frames=60"], "video.num_frames: 60 frames is not of the form 6k+1"),
        (["run", "-r", "A058", "-c", "nope"], "config 'nope' not found"),
        (["demo", "--relations", "A058,B1"], "unknown relation 'B1'"),
        (["run", "-r", "A058", "-s", "train.steps"], "expected key.path=value"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
