"""What a person monitoring a run sees (issue 11), without a Prefect server: pictures, names,
readable numbers, the parent-run summary tables, progress text, training-sample and evaluation
pictures. The same artifacts on a server are checked in test_flows.py and the real-server e2e."""

from __future__ import annotations

import re
import time
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest

from dreamrelation.config import PipelineConfig
from dreamrelation.data.previews import (
    decode_data_uri,
    decode_image,
    format_seconds,
    format_sig,
    frame_picks,
    frame_strip,
    image_data_uri,
    pick_tiles,
    round_sig,
)
from dreamrelation.data.video import write_video
from dreamrelation.plan import plan_relation


def _frames(n: int = 13, height: int = 48, width: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- pictures
def test_frame_strip_is_first_middle_last_at_a_small_height():
    frames = np.zeros((13, 48, 80, 3), dtype=np.uint8)
    for t in range(13):
        frames[t] = t * 10  # each frame has its own grey level
    assert frame_picks(13) == [0, 6, 12] and frame_picks(2) == [0, 1] and frame_picks(1) == [0]
    strip = frame_strip(frames, height=24, gap=2)
    assert strip.shape == (24, 3 * 40 + 2 * 2, 3) and strip.dtype == np.uint8
    assert strip[0, 0, 0] == 0 and strip[0, 42, 0] == 60 and strip[0, -1, 0] == 120  # frames 0, 6, 12
    assert (strip[:, 40:42] == 255).all()  # the white gap
    tiny = frame_strip(np.zeros((7, 16, 32, 3), dtype=np.uint8))  # tiny videos are enlarged
    assert tiny.shape[0] == 96
    with pytest.raises(ValueError):
        frame_strip(np.zeros((5, 16, 32), dtype=np.uint8))


def test_pick_tiles_of_a_mask_preview_strip():
    strip = np.concatenate([np.full((30, 50, 3), 40 * k, dtype=np.uint8) for k in range(4)], axis=1)
    tiles = pick_tiles(strip, 50, keep=3, height=30, gap=0)
    assert tiles.shape == (30, 150, 3)
    assert [tiles[0, x, 0] for x in (0, 50, 100)] == [0, 80, 120]  # tiles 0, 2 (rounded middle), 3
    assert pick_tiles(strip, 33, height=15).shape == (15, 100, 3)  # not whole tiles: resized as one


def test_image_data_uri_is_a_small_decodable_jpeg_or_png():
    image = _frames(1, 480, 848)[0]  # noise: the worst case for a compressor
    uri = image_data_uri(image, "jpeg", max_bytes=30_000)
    mime, data = decode_data_uri(uri)
    assert uri.startswith("data:image/jpeg;base64,") and mime == "image/jpeg"
    assert len(data) <= 30_000 and data[:3] == b"\xff\xd8\xff"
    decoded = decode_image(data)
    assert decoded.ndim == 3 and decoded.shape[1] < 848  # halved until it fit
    png = decode_data_uri(image_data_uri(np.zeros((20, 30, 3), np.uint8), "png"))[1]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and decode_image(png).shape == (20, 30, 3)
    with pytest.raises(ValueError):
        decode_data_uri("file:///tmp/x.png")


def test_numbers_round_to_four_significant_figures():
    assert round_sig(1 / 3) == 0.3333 and format_sig(1 / 3) == "0.3333"
    assert format_sig(0.000123456) == "0.0001235" and format_sig(123.456) == "123.5"
    assert format_sig(1234567.0) == "1.235e+06" and format_sig(2) == "2" and format_sig(0.0) == "0"
    assert format_sig(None) == "n/a" and format_sig(float("nan")) == "n/a" and format_sig("x", missing="") == ""
    assert round_sig(np.float32(0.5)) == 0.5 and round_sig(True) is None
    assert format_seconds(4.21) == "4.2 s" and format_seconds(123) == "2:03" and format_seconds(3723) == "1:02:03"
    assert format_seconds(None) == "-"


# --------------------------------------------------------------------------- names, links, progress
def test_run_names_come_from_the_parameters():
    from dreamrelation.tasks.runs import fan_out_run_name, pipeline_run_name, run_name, stage_run_name

    config = PipelineConfig()
    plan = plan_relation("A058", config)
    assert run_name("58", "train_relation", config) == f"a058-train-relation-{plan['train_relation'].fingerprint[:8]}"
    assert run_name("A058", "select_clips", config.model_dump(mode="json")) == (
        f"a058-select-clips-{plan['select_clips'].fingerprint[:8]}"  # JSON config, as from an event
    )
    other = PipelineConfig(train={**config.train.model_dump(), "steps": 7})
    assert run_name("A058", "train_relation", other) != run_name("A058", "train_relation", config)
    assert run_name("A058", "select_clips", other) == run_name("A058", "select_clips", config)
    assert pipeline_run_name("A058", config, None) == f"a058-relation-pipeline-{plan['evaluate'].fingerprint[:8]}"
    assert pipeline_run_name("A058", config, "make_masks").endswith(plan["make_masks"].fingerprint[:8])
    assert re.fullmatch(r"fan-out-2-relations-[0-9a-f]{8}", fan_out_run_name(["A058", "A055"], config))
    assert re.fullmatch(r"relation-make-masks-[0-9a-f]{8}", stage_run_name("make_masks")())  # no parameters


def test_fan_out_and_toy_runs_get_readable_names():
    from dreamrelation.config import ToyConfig
    from dreamrelation.plan import plan_toy
    from dreamrelation.tasks.runs import fan_out_run_name, toy_run_name, toy_stage_run_name

    config = PipelineConfig()
    # "all" is named by what it stands for: the 26 NTU two-person actions, not "1 relation"
    assert re.fullmatch(r"fan-out-26-relations-[0-9a-f]{8}", fan_out_run_name(["all"], config))
    toy = ToyConfig()
    plan = plan_toy(toy)
    assert toy_run_name("pretrain_base", toy) == f"toy-base-{plan['pretrain_base'].fingerprint[:8]}"
    assert toy_run_name("study", toy.model_dump(mode="json")) == f"toy-study-{plan['study'].fingerprint[:8]}"
    assert toy_stage_run_name("study")() == toy_run_name("study", ToyConfig())  # no parameters: the defaults


def test_store_links_only_for_urls_a_browser_can_follow():
    from dreamrelation.tasks.ui import cell, is_remote, markdown_image, publish_store_link

    assert is_remote("s3://b/k") and is_remote("gs://b/k") and is_remote("https://h/k")
    assert not is_remote("/data/artifacts") and not is_remote("memory://x") and not is_remote("relative/dir")
    assert publish_store_link("select_clips", "A058", "s3://b/k") is None  # outside a run: nothing sent
    assert markdown_image("data:image/png;base64,AA", "a [b] | c") == "![a b c](data:image/png;base64,AA)"
    assert cell("a|b\nc") == "a/b c"


def test_progress_text_has_count_note_elapsed_and_eta():
    from dreamrelation.tasks.training import loss_note
    from dreamrelation.tasks.ui import Progress

    bar = Progress("Train Steps", total=10, description="training steps").start()
    bar.update(5, note=loss_note({"step": 5, "loss_rec": 0.123456, "loss_rcl": None, "group": "relation"}))
    time.sleep(0.05)
    bar.update(6)
    text = bar.describe()
    assert text.startswith("training steps: 6/10 · loss_rec 0.1235 · group relation · elapsed ")
    assert re.search(r"ETA \d+\.\d s$", text)
    bar.update(10)
    assert "ETA" not in bar.describe() and bar.percent == 100.0
    assert "loss_rcl 0.5" in loss_note({"loss_rec": 1.0, "loss_rcl": 0.5})


def test_training_samples_become_frame_strips(tmp_path):
    from dreamrelation.model.config import TrainConfig
    from dreamrelation.tasks.training import SamplePublisher

    config = TrainConfig.demo().model_copy(update={"steps": 30, "sample_every": 10})
    samples = tmp_path / "samples"
    publisher = SamplePublisher("A058", samples, config)
    assert publisher.poll(11) == []  # nothing written yet
    write_video(samples / "step-00000010.mp4", _frames(7, 16, 32), 30.0)
    assert publisher.poll(10) == []  # the step-10 sample is written after step 10's callback
    assert publisher.poll(11) == [10] and publisher.poll(21) == []
    write_video(samples / "step-00000030.mp4", _frames(7, 16, 32), 30.0)
    assert publisher.poll() == [30]  # after training: the last one
    capped = SamplePublisher("A058", samples, config.model_copy(update={"steps": 1000, "sample_every": 10}), limit=12)
    wanted = [s for s in range(10, 1001, 10) if capped.wanted(s)]
    assert len(wanted) <= 13 and wanted[-1] == 1000  # every k-th and the last


def test_training_sample_artifacts_say_their_step(tmp_path, monkeypatch):
    from dreamrelation.model.config import TrainConfig
    from dreamrelation.tasks import training

    published = []
    monkeypatch.setattr(training, "publish_image", lambda key, image, description: published.append((key, description)))
    config = TrainConfig.demo().model_copy(update={"steps": 30, "sample_every": 10})
    for step in (10, 30):
        write_video(tmp_path / f"step-{step:08d}.mp4", _frames(7, 16, 32), 30.0)
    assert training.SamplePublisher("A058", tmp_path, config).poll() == [10, 30]
    # one key (its versions are the samples); the card shows the description's first line: the step first
    assert [key for key, _ in published] == ["a058-train-sample"] * 2
    assert published[0][1].startswith("step 10 of 30: training sample of A058")
    assert published[1][1].startswith("step 30 of 30: ") and config.sample_prompt in published[1][1]


# --------------------------------------------------------------------------- summaries
def test_pipeline_summary_lists_every_stage():
    from dreamrelation.tasks.summary import StageRow, pipeline_summary_markdown

    rows = [
        StageRow("select_clips", "reused", 0.4, uuid4(), "a058-select-clips-1234abcd", "/r/manifest.json"),
        StageRow("write_captions", "built", 2.5, uuid4(), "a058-write-captions-1234abcd", "/r/captions"),
        StageRow("encode_latents", "failed", 1.0, uuid4(), "a058-encode-latents-1234abcd", note="Failed: boom"),
    ]
    text = pipeline_summary_markdown("A058", rows, relation_name="handshaking")
    assert text.startswith("### A058 (handshaking): 1 built, 1 reused, 1 failed")
    # the run's name, linked to its page when the UI's URL is known (a bare name otherwise)
    assert re.search(r"\| select_clips \| \*\*reused\*\* \| 0.4 s \| (\[a058-select-clips-1234abcd\]\(http\S+/runs/flow-run/[0-9a-f-]{36}\)|a058-select-clips-1234abcd \(`[0-9a-f]{8}`\)) \|", text)
    assert "| write_captions | **built** | 2.5 s |" in text and "`/r/captions` |" in text
    assert "| encode_latents | **failed** |" in text and "Failed: boom" in text
    assert "| make_masks | not run | | | an earlier stage failed |" in text

    methods = {"DreamRelation": {"relation_accuracy": 1 / 3, "clip_t": 0.2512345, "temporal_consistency": 0.98765, "fvd": 1234.5678}}
    done = [StageRow(stage, "built", 1.0, uuid4(), stage, f"/r/{stage}") for stage in plan_relation("A058", PipelineConfig())]
    done[-1].summary = {"methods": methods}
    text = pipeline_summary_markdown("A058", done)
    assert "| DreamRelation | 0.3333 | 0.2512 | 0.9877 | 1235 |" in text and "FVD ↓" in text
    stopped = pipeline_summary_markdown("A058", done[:4], stop_after="make_masks")
    assert "| train_relation | not run | | | stop_after=make_masks |" in stopped


def test_fan_out_summary_reads_stages_and_metrics_from_the_store(tmp_path):
    from dreamrelation.data.store import ArtifactStore
    from dreamrelation.tasks.summary import RelationRow, fan_out_summary_markdown

    config = PipelineConfig(root=str(tmp_path / "artifacts"))
    store = ArtifactStore(config.root)
    plan = plan_relation("A058", config)
    for stage, artifact in plan.items():
        summary = {"methods": {"DreamRelation": {"relation_accuracy": 0.5, "clip_t": 0.123456, "temporal_consistency": 0.9, "fvd": None}}}
        with store.write(artifact.key, {"stage": stage, "summary": summary if stage == "evaluate" else {}}) as tmp:
            Path(tmp).mkdir(parents=True, exist_ok=True)
    with store.write(plan_relation("A055", config)["select_clips"].key, {}) as tmp:
        Path(tmp).write_text("{}")
    rows = [
        RelationRow("A058", "Completed", 75.0, str(uuid4()), "a058-relation-pipeline-aaaa1111"),
        RelationRow("A055", "Failed", 3.0, str(uuid4()), "a055-relation-pipeline-bbbb2222", "boom | bad"),
    ]
    text = fan_out_summary_markdown(rows, config)
    assert text.startswith("### Fan-out: 1 of 2 relations completed")
    assert "| A058 | **Completed** | 1:15 |" in text and "| 6/6 | DreamRelation | 0.5 | 0.1235 | 0.9 |  |" in text
    assert "| A055 | **Failed** |" in text and "| 1/6 to select_clips |" in text and "boom / bad" in text


def test_evaluation_tables_are_rounded_and_show_frame_strips(tmp_path):
    from dreamrelation.tasks.evaluation import metric_rows, samples_markdown

    def method(name: str, slug: str) -> dict:
        videos = []
        for index, prompt in enumerate(["two people shake hands", "a | b"]):
            file = f"videos/{slug}/p{index:02d}-seed0.mp4"
            write_video(tmp_path / file, _frames(7, 16, 32, seed=index), 30.0)
            videos.append({"prompt_index": index, "prompt": prompt, "seed": 0, "file": file})
        return {
            "name": name, "n_videos": 2, "videos": videos,
            "relation_accuracy": {"computed": True, "value": 2 / 3, "std": 0.4714045},
            "clip_t": {"computed": True, "value": 0.3333333333333333},
            "temporal_consistency": {"computed": True, "value": 0.99123},
            "fvd": {"computed": True, "value": 345.6789},
        }

    results = {"relation_name": "handshaking", "methods": [method("DreamRelation", "dreamrelation"), method("Mochi (base)", "mochi-base")]}
    rows = metric_rows(results["methods"])
    assert rows[0] == {
        "method": "DreamRelation", "relation accuracy": "0.6667 ± 0.4714", "CLIP-T": "0.3333",
        "temporal consistency": "0.9912", "FVD": "345.7", "videos": 2,
    }
    text = samples_markdown("A058", str(tmp_path), results, max_prompts=1)
    assert "| DreamRelation | 0.6667 ± 0.4714 | 0.3333 | 0.9912 | 345.7 |" in text
    assert "| prompt | DreamRelation | Mochi (base) |" in text
    images = re.findall(r"\((data:image/[a-z]+;base64,[A-Za-z0-9+/=]+)\)", text)
    assert len(images) == 2  # one prompt shown, one strip per method
    for uri in images:
        mime, data = decode_data_uri(uri)
        assert mime == "image/jpeg" and len(data) <= 16_000 and decode_image(data).shape[0] in (48, 96)  # noise: halved
    assert "1 more prompt(s) not shown" in text and "a / b" not in text


def test_summaries_show_the_toy_judges_columns_when_a_method_has_them():
    from dreamrelation.tasks.summary import metrics_markdown

    vlm = {"DreamRelation": {"relation_accuracy": 0.5, "clip_t": 0.2, "temporal_consistency": 0.9, "fvd": None}}
    assert "Subject fidelity" not in metrics_markdown(vlm)
    judged = {"DreamRelation": {**vlm["DreamRelation"], "subject_fidelity": 0.0, "appearance_leakage": 0.25}}
    text = metrics_markdown(judged, {"DreamRelation": 0.1})
    assert text.splitlines()[0] == (
        "| method | Relation accuracy ↑ | Subject fidelity ↑ | Appearance leakage ↓ | CLIP-T ↑ "
        "| Temporal consistency ↑ | FVD ↓ |"
    )
    assert "| DreamRelation | 0.5 ± 0.1 | 0 | 0.25 | 0.2 | 0.9 | n/a |" in text  # a 0.0 fidelity is still shown


# --------------------------------------------------------------------------- the CLI's table, keys, telemetry (issue 24)
def test_stage_table_is_the_one_the_cli_prints(capsys):
    from dreamrelation.flows.cli import _report
    from dreamrelation.tasks.common import StageResult
    from dreamrelation.tasks.summary import stage_table

    results = [
        StageResult("select_clips", "A058", "/r/manifest.json", "f" * 16, True, {}),
        StageResult("write_captions", "A058", "/r/captions", "e" * 16, False, {}),
    ]
    assert stage_table(results).splitlines() == [
        "relation  stage           status   artifact",
        "A058      select_clips    reused   /r/manifest.json",
        "A058      write_captions  built    /r/captions",
    ]
    _report(results)
    assert capsys.readouterr().out == stage_table(results) + "\n"


def test_the_cli_turns_the_temporary_servers_analytics_off():
    """Offline, the temporary server's telemetry logged an ERROR on every run."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    code = ("import dreamrelation.flows.cli; from prefect.settings import get_current_settings; "
            "print(get_current_settings().server.analytics_enabled)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"  # a setting of the user's own wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True"


#: Keys that belong to no single relation.
CROSS_RELATION_KEYS = {"evaluation-report", "fan-out-summary", "fan-out-status", "qkv-analysis"}


def _artifact_keys_in_source() -> list[tuple[str, int, str]]:
    """(file, line, problem) for every artifact key in tasks/ and flows/ that does not start with a relation."""
    import ast

    import dreamrelation

    package = Path(dreamrelation.__file__).parent
    problems = []
    for path in sorted([*package.glob("tasks/*.py"), *package.glob("flows/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name == "artifact_key" and node.args and isinstance(node.args[0], ast.Constant):
                literal = [a.value for a in node.args if isinstance(a, ast.Constant)]
                if len(literal) < len(node.args) or "-".join(literal) not in CROSS_RELATION_KEYS:
                    problems.append((path.name, node.lineno, f"artifact_key starts with {node.args[0].value!r}"))
            for keyword in node.keywords:
                if keyword.arg == "key" and isinstance(keyword.value, ast.Constant):
                    if keyword.value.value not in CROSS_RELATION_KEYS:
                        problems.append((path.name, node.lineno, f"literal key {keyword.value.value!r}"))
    return problems


def test_every_artifact_key_starts_with_its_relation():
    """`a058-clips`, `a058-masks`, ... like `a058-evaluate-metrics`; only cross-relation keys are fixed names."""
    from dreamrelation.tasks.ui import artifact_key

    assert _artifact_keys_in_source() == []
    assert artifact_key("A058", "clips") == "a058-clips"
