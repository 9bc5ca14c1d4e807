"""Own-folder datasets (issue 12): listing, sidecars, selection, provided masks, ids, fingerprints, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from dreamrelation.config import ConfigError, PipelineConfig, load_config, relation_table
from dreamrelation.data.captions import caption_manifest
from dreamrelation.data.folder import (
    FolderDatasetError,
    MaskFileError,
    SidecarError,
    list_folder_dataset,
    parse_sidecar,
    read_user_masks,
)
from dreamrelation.data.own_folder_demo import (
    PROMPTS_FILE,
    RELATIONS_FILE,
    STAMP,
    DemoFolderError,
    export_own_folder_demo,
)
from dreamrelation.data.relations import RelationError, get_relation
from dreamrelation.data.select import SelectionError, select_clips
from dreamrelation.data.video import VideoConfig, read_video, write_video
from dreamrelation.data.world import WorldConfig, render_clip, sample_specs
from dreamrelation.plan import plan_relation

VIDEO = VideoConfig(num_frames=25, height=96, width=160, fps=30.0, aspect=160 / 96)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own") / "own-folder"
    export_own_folder_demo(folder)
    return folder


def folder_config(folder: Path, tmp_path: Path, *overrides: str) -> PipelineConfig:
    """The own-folder preset pointed at `folder`, artifacts under `tmp_path`."""
    return load_config("own-folder", [
        f"root={tmp_path / 'artifacts'}",
        f"relations_file={folder / RELATIONS_FILE}",
        f"select.dataset_root={folder / 'videos'}",
        f"evaluate.prompts_path={folder / PROMPTS_FILE}",
        *overrides,
    ])


def copy_folder(demo_folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "own"
    shutil.copytree(demo_folder, target, symlinks=True)
    return target


# --------------------------------------------------------------------------- listing and ids


def test_relation_ids_are_slugs_of_folder_names_with_spaces_and_unicode(demo_folder: Path, tmp_path: Path) -> None:
    listing = list_folder_dataset(str(demo_folder / "videos"))
    assert {rid: r.name for rid, r in listing.relations.items()} == {
        "push_away": "Push Away", "orbit_umkreisen": "Orbit · Umkreisen"
    }
    config = folder_config(demo_folder, tmp_path)
    table = relation_table(config)
    # the folder name, its slug, any spelling that slugs the same: one relation
    for given in ("Push Away", "push_away", "PUSH  away", " push away! "):
        assert get_relation(given, table).id == "push_away"
    assert get_relation("Orbit · Umkreisen", table).name == "Orbit · Umkreisen"
    assert table["push_away"].caption == "A {subject1} is pushing a {subject2}."  # relations_file template
    with pytest.raises(RelationError, match=r"unknown relation 'A058'.*push_away \(Push Away\)"):
        get_relation("A058", table)
    keys = plan_relation("Push Away", config)
    assert keys["select_clips"].key.startswith("relations/push_away/")


def test_a_folder_name_without_usable_characters_is_named_and_skipped(tmp_path: Path, caplog) -> None:
    root = tmp_path / "videos"
    (root / "握手").mkdir(parents=True)
    (root / "wave").mkdir()
    (root / "empty").mkdir()  # no video: not a relation
    frames = np.zeros((7, 32, 32, 3), np.uint8)
    write_video(root / "握手" / "a.mp4", frames, 12.0)
    write_video(root / "wave" / "a.mp4", frames, 12.0)
    listing = list_folder_dataset(str(root))
    assert list(listing.relations) == ["wave"]
    assert "no ASCII letter or digit" in listing.invalid["握手"]
    config = load_config(None, ["synthetic=null", "select.source=folder", f"select.dataset_root={root}",
                                "masks.backend=provided"])
    with caplog.at_level("WARNING", logger="dreamrelation.config"):
        assert list(relation_table(config)) == ["wave"]
    assert "'握手' is not used" in caplog.text


def test_two_folders_with_the_same_id_and_a_missing_root_are_errors(tmp_path: Path) -> None:
    frames = np.zeros((7, 32, 32, 3), np.uint8)
    for name in ("Fist Bump", "fist_bump"):
        write_video(tmp_path / name / "a.mp4", frames, 12.0)
    with pytest.raises(FolderDatasetError, match="folders 'Fist Bump' and 'fist_bump' both give the relation id"):
        list_folder_dataset(str(tmp_path))
    with pytest.raises(FolderDatasetError, match="does not exist"):
        list_folder_dataset(str(tmp_path / "nope"))


def test_skeleton_backends_and_the_generator_are_refused_for_folder_datasets() -> None:
    with pytest.raises(ConfigError, match="masks.backend=skeleton-box needs NTU .skeleton files"):
        load_config(None, ["synthetic=null", "select.source=folder"])
    with pytest.raises(ConfigError, match="masks.backend=provided reads <clip>.masks.npz"):
        load_config(None, ["masks.backend=provided"])
    with pytest.raises(ConfigError, match="set synthetic=null"):
        load_config(None, ["select.source=folder", "masks.backend=provided"])
    # grounded-sam2 needs no skeleton: allowed
    assert load_config(None, ["synthetic=null", "select.source=folder", "masks.backend=grounded-sam2"])


# --------------------------------------------------------------------------- sidecars and selection


def test_sidecar_front_matter() -> None:
    assert parse_sidecar("A cat\n  greets a dog.\n", "a.txt") == ("A cat greets a dog.", {})
    text = "---\nstart_seconds: 1.5\n---\nA cat greets a dog.\n"
    assert parse_sidecar(text, "a.txt") == ("A cat greets a dog.", {"start_seconds": 1.5})
    assert parse_sidecar("---\nstart_seconds: 2\n---\n", "a.txt") == ("", {"start_seconds": 2.0})
    with pytest.raises(SidecarError, match="a.txt: unknown front matter key"):
        parse_sidecar("---\nstart: 1\n---\nx", "a.txt")
    with pytest.raises(SidecarError, match="never closed"):
        parse_sidecar("---\nstart_seconds: 1\nx", "a.txt")
    with pytest.raises(SidecarError, match="start_seconds must be >= 0"):
        parse_sidecar("---\nstart_seconds: -1\n---\nx", "a.txt")


def test_selection_mixes_fps_and_sizes_drops_short_and_uncaptioned_clips(demo_folder: Path, tmp_path: Path) -> None:
    config = folder_config(demo_folder, tmp_path)
    table = relation_table(config)
    push = select_clips(table["push_away"], config.select, VIDEO)
    assert push.clip_ids == ["take 01", "take 02", "take 03", "take-04"]
    assert {(c.fps, c.width, c.height) for c in push.clips} == {(12.0, 96, 64), (15.0, 128, 80), (24.0, 160, 96)}
    by_id = {c.clip_id: c for c in push.clips}
    assert by_id["take 02"].start_seconds == 0.5  # from the sidecar's front matter
    assert by_id["take 03"].caption is None  # no sidecar: the template is used by write_captions
    assert by_id["take 01"].caption.startswith("A dark ") and by_id["take 01"].masks.endswith("take 01.masks.npz")
    assert by_id["take-04"].masks.endswith("take-04.masks")
    assert [(d.clip_id, d.reason) for d in push.dropped] == [
        ("take 05 (short)", "too short: 7 frames at 12 fps give 17 frames at 30 fps, 25 needed")
    ]
    orbit = select_clips(table["orbit_umkreisen"], config.select, VIDEO)
    assert len(orbit.clips) == 4
    assert orbit.dropped[0].clip_id == "IMG_2235 no caption"
    assert "no caption: no IMG_2235 no caption.txt beside the video and no caption template" in orbit.dropped[0].reason

    captioned = caption_manifest(push, table["push_away"], subject_words=("bear", "raccoon"))
    assert {c.clip_id: c.caption for c in captioned.clips}["take 03"] == "A bear is pushing a raccoon."
    assert {c.clip_id: c.caption for c in captioned.clips}["take 01"] == by_id["take 01"].caption


def test_windows_file_overrides_front_matter_and_can_make_a_clip_too_short(demo_folder: Path, tmp_path: Path) -> None:
    windows = tmp_path / "windows.csv"
    windows.write_text('clip,start_seconds\n"Push Away/take 01",1.4\ntake 02,0.25\n')
    config = folder_config(demo_folder, tmp_path, f"select.windows_file={windows}", "select.on_shortage=take_all")
    manifest = select_clips(relation_table(config)["push_away"], config.select, VIDEO)
    assert {c.clip_id: c.start_seconds for c in manifest.clips}["take 02"] == 0.25
    # 25 frames at 12 fps from 1.4 s leave 0.68 s: 20 frames at 30 fps
    assert ("take 01", "too short: 25 frames at 12 fps give 20 frames at 30 fps after start_seconds 1.4, 25 needed") in [
        (d.clip_id, d.reason) for d in manifest.dropped
    ]
    windows.write_text("clip,start\ntake 01,1\n")
    with pytest.raises(SelectionError, match="windows file .* columns clip,start_seconds"):
        select_clips(relation_table(config)["push_away"], config.select, VIDEO)


def test_fingerprint_changes_when_a_sidecar_caption_changes(demo_folder: Path, tmp_path: Path) -> None:
    folder = copy_folder(demo_folder, tmp_path)
    config = folder_config(folder, tmp_path)
    before = plan_relation("push_away", config)
    assert plan_relation("push_away", config) == before  # stable
    other = plan_relation("orbit_umkreisen", config)
    sidecar = folder / "videos" / "Push Away" / "take 01.txt"
    sidecar.write_text("A dark red person is shoving a light orange person.\n")
    after = plan_relation("push_away", config)
    for stage in ("select_clips", "write_captions", "encode_latents", "train_relation"):
        assert after[stage].fingerprint != before[stage].fingerprint
    assert plan_relation("orbit_umkreisen", config) == other  # another relation's folder did not change
    (folder / RELATIONS_FILE).write_text('- id: push_away\n  caption: "A {subject1} shoves a {subject2}."\n')
    assert plan_relation("push_away", config)["write_captions"].fingerprint != after["write_captions"].fingerprint


# --------------------------------------------------------------------------- provided masks


def _clip_with_masks(tmp_path: Path, masks: np.ndarray | None = None) -> tuple[Path, np.ndarray]:
    clip = render_clip(sample_specs(WorldConfig(), 1, seed=3)[0])
    write_video(tmp_path / "c.mp4", clip.video, 12.0)
    return tmp_path / "c.mp4", clip.masks if masks is None else masks


def test_user_masks_are_validated_against_the_video(tmp_path: Path) -> None:
    _, masks = _clip_with_masks(tmp_path)
    t, _, h, w = masks.shape
    np.savez(tmp_path / "ok.masks.npz", masks=masks.astype(np.uint8))
    assert read_user_masks(str(tmp_path / "ok.masks.npz"), "c", t, h, w).dtype == bool
    np.savez(tmp_path / "short.masks.npz", masks=masks[:-3])
    with pytest.raises(MaskFileError, match=f"clip c: short.masks.npz has {t - 3} frames of masks, the video has {t}"):
        read_user_masks(str(tmp_path / "short.masks.npz"), "c", t, h, w)
    np.savez(tmp_path / "one.masks.npz", masks=masks[:, :1])
    with pytest.raises(MaskFileError, match=r"clip c: one.masks.npz has masks of shape .*expected \(T, 2, H, W\)"):
        read_user_masks(str(tmp_path / "one.masks.npz"), "c", t, h, w)
    np.savez(tmp_path / "size.masks.npz", masks=masks[:, :, :-2])
    with pytest.raises(MaskFileError, match="at the video's own resolution"):
        read_user_masks(str(tmp_path / "size.masks.npz"), "c", t, h, w)
    np.savez(tmp_path / "name.masks.npz", other=masks)
    with pytest.raises(MaskFileError, match="no array named 'masks'"):
        read_user_masks(str(tmp_path / "name.masks.npz"), "c", t, h, w)
    labels = tmp_path / "one-label.masks"
    labels.mkdir()
    for k in range(t):
        Image.fromarray(masks[k, 0].astype(np.uint8) * 7).save(labels / f"f{k}.png")
    with pytest.raises(MaskFileError, match="expected 2 subject labels besides 0 \\(background\\), found 1: \\[7\\]"):
        read_user_masks(str(labels), "c", t, h, w)


def test_label_png_folder_reads_in_frame_number_order(tmp_path: Path) -> None:
    masks = np.zeros((12, 2, 8, 8), bool)
    for k in range(12):
        masks[k, 0, 0, k % 8] = True
        masks[k, 1, 7, 0] = True
    folder = tmp_path / "c.masks"
    folder.mkdir()
    for k in range(12):  # frame10 must follow frame9, not frame1
        Image.fromarray(np.where(masks[k, 0], 3, np.where(masks[k, 1], 9, 0)).astype(np.uint8)).save(folder / f"frame{k}.png")
    assert np.array_equal(read_user_masks(str(folder), "c", 12, 8, 8), masks)


def test_bad_masks_fail_their_clip_with_the_reason(demo_folder: Path, tmp_path: Path) -> None:
    from dreamrelation.stages.masks import make_masks

    folder = copy_folder(demo_folder, tmp_path)
    push = folder / "videos" / "Push Away"
    good = np.load(push / "take 01.masks.npz")["masks"]
    np.savez(push / "take 01.masks.npz", masks=good[:-1])  # one frame short
    np.savez(push / "take 02.masks.npz", masks=good[:0])  # wrong frame count, empty
    (push / "take 03.masks.npz").unlink()  # no masks at all
    config = folder_config(folder, tmp_path)
    # selection drops such clips first (issue 24 §5); make_masks still checks every clip it is given
    unchecked = config.select.model_copy(update={"require_masks": False})
    manifest = select_clips(relation_table(config)["push_away"], unchecked, config.video)
    summary = make_masks(manifest, str(tmp_path / "masks"), config.video, config.masks)
    assert summary["ok"] == 1 and summary["failed"] == 3
    assert "clip take 01: take 01.masks.npz has 24 frames of masks, the video has 25" in summary["reasons"]["take 01"]
    assert "no take 03.masks.npz or take 03.masks/ beside the video" in summary["reasons"]["take 03"]
    latent = zarr.open_group(str(tmp_path / "masks" / "masks.zarr"), mode="r")["latent"][:]
    assert np.isfinite(latent[3]).all() and np.isnan(latent[0]).all()  # take-04 (label PNGs) is the good one


def test_provided_masks_follow_the_window_and_the_video_preprocessing(demo_folder: Path, tmp_path: Path) -> None:
    """take 02 starts at 0.5 s: its training frames and masks come from the same source frames."""
    from dreamrelation.stages.masks import SegmentationModels, clip_masks

    config = folder_config(demo_folder, tmp_path)
    manifest = select_clips(relation_table(config)["push_away"], config.select, config.video)
    clip = {c.clip_id: c for c in manifest.clips}["take 02"]
    result = clip_masks(clip, config.video, config.masks, SegmentationModels())
    assert result.pixel.shape == (25, 2, 96, 160) and result.subject_ids == [1, 2]
    frames = result.frames.astype(float)
    background = np.median(frames.reshape(-1, 3), axis=0)
    differs = np.abs(frames - background).sum(axis=-1) > 60
    union = result.pixel.any(axis=1)
    assert (differs & union).sum() / differs.sum() > 0.85  # subject pixels lie under the masks
    source, _ = read_video(clip.video)
    assert len(source) == 31 and clip.start_seconds == 0.5


# --------------------------------------------------------------------------- demo export and end to end


def test_demo_export_never_writes_into_a_folder_it_does_not_own(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("sentinel")
    with pytest.raises(DemoFolderError, match="was not written by the own-folder demo"):
        export_own_folder_demo(mine)
    assert (mine / "keep.txt").read_text() == "sentinel" and sorted(p.name for p in mine.iterdir()) == ["keep.txt"]
    fresh = tmp_path / "fresh"
    export_own_folder_demo(fresh)
    stamp = (fresh / STAMP).stat().st_mtime_ns
    export_own_folder_demo(fresh)  # complete: reused, not rewritten
    assert (fresh / STAMP).stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_folder_dataset_end_to_end_through_the_pipeline(prefect_harness, demo_folder: Path, tmp_path: Path) -> None:
    from dreamrelation.flows.pipeline import relation_pipeline

    config = folder_config(
        demo_folder, tmp_path, "train.steps=3", "train.checkpoint_every=3", "train.sample_every=0",
        "evaluate.prompts_per_relation=1",
    )
    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in demo_folder.rglob("*")}

    before = snapshot()
    results = relation_pipeline(relation="Push Away", config=config)
    assert snapshot() == before  # the user's folder is only read: nothing added, changed or removed
    assert [r.stage for r in results] == ["select_clips", "write_captions", "encode_latents", "make_masks",
                                          "train_relation", "evaluate"]
    plan = plan_relation("push_away", config)
    root = tmp_path / "artifacts"
    captioned = json.loads((root / plan["write_captions"].key / "manifest.json").read_text())
    captions = {c["clip_id"]: c["caption"] for c in captioned["clips"]}
    assert captions["take 03"] == "A person is pushing a person."  # template, default subject words
    sidecars = root / plan["write_captions"].key / "push_away"
    assert (sidecars / "take 03.txt").read_text() == "A person is pushing a person.\n"
    masks = zarr.open_group(str(root / plan["make_masks"].key / "masks.zarr"), mode="r")
    assert masks.attrs["summary"]["ok"] == 4 and masks.attrs["backend"] == "provided"
    latents = zarr.open_group(str(root / plan["encode_latents"].key / "latents.zarr"), mode="r")
    assert latents["mean"].shape[0] == 4  # clips of three sizes and frame rates, one latent shape
    evaluation = json.loads((root / plan["evaluate"].key / "results.json").read_text())
    assert evaluation["relation"] == "push_away"
    assert [v["prompt"] for v in evaluation["methods"][0]["videos"]] == ["A bear is pushing a raccoon."]
    assert relation_pipeline(relation="push_away", config=config)[0].skipped  # same relation, same keys


def test_captions_past_the_t5_limit_are_found() -> None:
    from dreamrelation.model.family import overlong_captions
    from dreamrelation.model.mochi import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    short, long = "A person is pushing a person.", " ".join(["a person pushing"] * 200)
    counts = overlong_captions(tokenizer, [short, long, short], max_length=256)
    assert list(counts) == [1] and counts[1] > 256
    assert overlong_captions(tokenizer, [short], max_length=len(tokenizer(short).input_ids)) == {}
    assert overlong_captions(tokenizer, [short], max_length=len(tokenizer(short).input_ids) - 1) == {
        0: len(tokenizer(short).input_ids)
    }


def test_a_folder_dataset_on_an_object_store_url(demo_folder: Path) -> None:
    """The same layout under an fsspec URL (in-memory here, s3:// or gs:// for real): list, select, read masks."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(demo_folder / "videos"), "/own-url/videos", recursive=True)
    root = "memory://own-url/videos"
    listing = list_folder_dataset(root)
    assert sorted(listing.relations) == ["orbit_umkreisen", "push_away"]
    clip = {c.clip_id: c for c in listing.relations["push_away"].clips}["take 02"]
    assert clip.video.startswith("memory://") and clip.video.endswith("/own-url/videos/Push Away/take 02.mkv")
    assert clip.caption_file.endswith("take 02.txt")
    config = PipelineConfig(synthetic=None, select={"source": "folder", "dataset_root": root, "clips_per_relation": 4,
                                                    "on_shortage": "take_all"}, masks={"backend": "provided"})
    manifest = select_clips(relation_table(config)["push_away"], config.select, VIDEO)
    assert [c.clip_id for c in manifest.clips] == ["take 01", "take 02", "take-04"]  # take 03 has no caption here
    record = {c.clip_id: c for c in manifest.clips}["take-04"]
    masks = read_user_masks(record.masks, record.clip_id, record.frames, record.height, record.width)
    assert masks.shape == (25, 2, 64, 96) and masks.any()
    before = plan_relation("push_away", config)["select_clips"].fingerprint
    fs.pipe_file("/own-url/videos/Push Away/take 01.txt", b"A person shoves a person.\n")
    assert plan_relation("push_away", config)["select_clips"].fingerprint != before


def test_relations_to_run_all_and_spellings(demo_folder: Path, tmp_path: Path) -> None:
    from dreamrelation.config import relations_to_run

    config = folder_config(demo_folder, tmp_path)
    assert relations_to_run(config, ["all"]) == ["orbit_umkreisen", "push_away"]
    assert relations_to_run(config, ["Push Away", "Orbit · Umkreisen"]) == ["push_away", "orbit_umkreisen"]
    with pytest.raises(ValueError, match="relations listed twice: push_away"):
        relations_to_run(config, ["Push Away", "push_away"])
    with pytest.raises(RelationError, match="unknown relation 'hug'"):
        relations_to_run(config, ["hug"])
    ntu = relations_to_run(PipelineConfig(), ["all"])
    assert len(ntu) == 26 and ntu[0] == "A050" and relations_to_run(PipelineConfig(), ["58"]) == ["A058"]


def test_cli_validates_folder_relations_before_starting_anything(demo_folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dreamrelation.flows.cli import app

    sets = ["-s", f"select.dataset_root={demo_folder / 'videos'}", "-s", f"root={tmp_path / 'artifacts'}",
            "-s", f"relations_file={demo_folder / RELATIONS_FILE}"]
    result = CliRunner().invoke(app, ["select", "-r", "hug", "-c", "own-folder", *sets])
    assert result.exit_code == 2 and "unknown relation 'hug'" in result.output and "push_away (Push Away)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "artifacts").exists()


# --------------------------------------------------------------------------- masks checked at selection (issue 24 §5)


def test_a_clip_whose_masks_do_not_fit_is_replaced_by_the_next_usable_clip(demo_folder: Path, tmp_path: Path) -> None:
    folder = copy_folder(demo_folder, tmp_path)
    config = folder_config(folder, tmp_path, "select.clips_per_relation=3")
    assert config.select.require_masks  # masks.backend=provided: a clip is usable only with masks that fit
    relation = relation_table(config)["push_away"]
    first = select_clips(relation, config.select, config.video)
    victim = first.clips[0].clip_id
    masks_file = folder / "videos" / "Push Away" / f"{victim}.masks.npz"
    if not masks_file.exists():  # take-04 keeps its masks as label PNGs
        victim = first.clips[1].clip_id
        masks_file = folder / "videos" / "Push Away" / f"{victim}.masks.npz"
    good = np.load(masks_file)["masks"]
    np.savez(masks_file, masks=good[:-1])  # one frame short
    after = select_clips(relation, config.select, config.video)
    assert len(after.clips) == 3 and victim not in after.clip_ids
    assert set(after.clip_ids) - set(first.clip_ids)  # the next usable clip took its place
    reason = {d.clip_id: d.reason for d in after.dropped}[victim]
    assert reason == f"masks do not fit: clip {victim}: {victim}.masks.npz has {len(good) - 1} frames of masks, " \
                     f"the video has {len(good)}"
    (folder / "videos" / "Push Away" / "take-04.masks" / "frame7.png").unlink()
    with pytest.raises(SelectionError, match=r"2 usable clip\(s\), 3 requested .*take-04: masks do not fit: "
                                             r"clip take-04: take-04.masks has 24 frames of masks, the video has 25"):
        select_clips(relation, config.select, config.video)


def test_masks_are_checked_without_loading_them(tmp_path: Path) -> None:
    from dreamrelation.data.folder import check_user_masks

    masks = np.zeros((7, 2, 6, 10), np.uint8)
    np.savez_compressed(tmp_path / "c.masks.npz", masks=masks)
    check_user_masks(str(tmp_path / "c.masks.npz"), "c", 7, 6, 10)
    with pytest.raises(MaskFileError, match="the video is 10x5"):
        check_user_masks(str(tmp_path / "c.masks.npz"), "c", 7, 5, 10)
    np.savez(tmp_path / "f.masks.npz", masks=masks.astype(np.float32))
    with pytest.raises(MaskFileError, match="masks must be bool or uint8, got float32"):
        check_user_masks(str(tmp_path / "f.masks.npz"), "f", 7, 6, 10)
    (tmp_path / "bad.masks.npz").write_bytes(b"not a zip")
    with pytest.raises(MaskFileError, match="cannot read bad.masks.npz"):
        check_user_masks(str(tmp_path / "bad.masks.npz"), "bad", 7, 6, 10)


def test_require_masks_is_set_by_the_provided_backend_and_refused_for_ntu() -> None:
    assert not PipelineConfig().select.require_masks
    with pytest.raises(ConfigError, match="select.require_masks"):
        load_config("demo", ["select.require_masks=true"])
