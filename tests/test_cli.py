"""The `dreamrelation` command: help on every subcommand, bad input as one clear line."""

import pytest
from typer.testing import CliRunner

# Prefect binds its console log handler to sys.stderr when flows are first imported: import them
# here, not inside CliRunner's temporary (later closed) streams.
import dreamrelation.flows.pipeline  # noqa: F401
from dreamrelation.flows.cli import app

runner = CliRunner()
COMMANDS = ["demo", "run", "select", "captions", "evaluate", "report", "analyze-qkv", "serve", "fan-out", "sample", "pretrain", "study"]


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
        (["run", "-r", "A058", "-s", "video.num_frames=60"], "video.num_frames: 60 frames fits no video VAE: Mochi-1 needs 6k+1"),
        (["run", "-r", "A058", "-c", "nope"], "config 'nope' not found"),
        (["demo", "--relations", "A058,B1"], "unknown relation 'B1'"),
        (["run", "-r", "A058", "-s", "train.steps"], "expected key.path=value"),
        (
            ["select", "-r", "A058", "-s", "select.clip_per_relation=2"],
            "select: unknown key 'clip_per_relation'; did you mean 'clips_per_relation'?",
        ),
        (["run", "-r", "A058", "-s", "rooot=/tmp/x"], "config: unknown key 'rooot'; did you mean 'root'?"),
        (["run", "-r", "A058", "-s", "select.setups=[1,"], "-s select.setups=[1,: the value is not valid YAML: line 1, column 4:"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_broken_preset_file_is_one_line_naming_file_line_and_column(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("select:\n  dataset_root: /data\n  setups: [1, 2\nvideo: {fps: 30}\n")
    result = runner.invoke(app, ["run", "-r", "A058", "-c", str(preset)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: config {preset} is not valid YAML: line 4, column 6: ")
    assert "(while parsing a flow sequence at line 3, column 11)" in lines[0]


def test_one_person_action_is_explained_with_the_two_person_ones_and_how_to_add_one():
    result = runner.invoke(app, ["select", "-r", "A061"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "A061 is a one-person NTU action" in output
    for relation in ("A050 punching/slapping other person;", "A058 handshaking;", "A120 finger-guessing game"):
        assert relation in output
    assert "26 two-person NTU actions" in output and "relations_file" in output
    assert "Traceback" not in result.output
