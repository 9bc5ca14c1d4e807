"""The synthetic NTU-format dataset: files, round trip of joints onto pixels, motion, faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from dreamrelation.data import synthetic
from dreamrelation.data.ntu import ClipName, parse_file_name
from dreamrelation.data.skeleton import INFERRED, TRACKED, read_skeleton
from dreamrelation.data.synthetic import (
    RELATION_MOTIONS,
    STAMP_NAME,
    DatasetFolderError,
    SyntheticClip,
    SyntheticConfig,
    _expected,
    generate_clip,
    generate_dataset,
    plan_dataset,
)
from dreamrelation.data.video import probe_video, read_video

MUTUAL = [f"A{a:03d}" for a in [*range(50, 61), *range(106, 121)]]
FIXTURE = SyntheticConfig(
    clips_per_relation=1, frames=24, missing_skeleton=1, single_body=1, short=1, short_frames=7, seed=3
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticClip]]:
    root = tmp_path_factory.mktemp("ntu")
    return root, generate_dataset(root, FIXTURE)


def _well_formed(clips: list[SyntheticClip]) -> list[SyntheticClip]:
    return [c for c in clips if c.fault is None]


def _load(clip: SyntheticClip):
    frames, _ = read_video(clip.video)
    with np.load(clip.masks) as data:
        masks, body_ids = data["masks"], list(data["body_ids"])
    return frames.astype(int), masks, body_ids, read_skeleton(clip.skeleton)


def _root_x(clip: SyntheticClip) -> np.ndarray:
    """SpineBase colorX of (body A, body B) per frame, (T, 2)."""
    skeleton = read_skeleton(clip.skeleton)
    return np.array([[body.color_xy[0, 0] for body in bodies] for bodies in skeleton.frames])


def test_layout_and_names_parse_back(dataset):
    root, clips = dataset
    assert len(clips) == len(FIXTURE.relations) * 4
    assert (root / STAMP_NAME).is_file()
    by_name = {str(c.name): c for c in clips}
    videos = sorted((root / "nturgb+d_rgb").iterdir())
    skeletons = sorted((root / "nturgb+d_skeletons").iterdir())
    assert len(videos) == len(clips) and len(skeletons) == len(clips) - len(FIXTURE.relations)
    for path in videos + skeletons:
        name, kind = parse_file_name(path.name)
        clip = by_name[str(name)]
        assert path == (clip.video if kind == "video" else clip.skeleton)
        assert path.name.endswith("_rgb.avi" if kind == "video" else ".skeleton")
    for clip in clips:
        assert (clip.name.setup <= 17) == (clip.name.action <= 60)  # NTU-60 vs NTU-120 setups
        assert clip.masks == root / "masks" / f"{clip.name}_masks.npz" and clip.masks.is_file()
    assert sorted(c.relation for c in _well_formed(clips)) == sorted(FIXTURE.relations)


def test_joints_lie_on_drawn_figures(dataset):
    """colorX/colorY of every joint hits its figure in the masks and (after MJPEG) in the video."""
    _, clips = dataset
    for clip in _well_formed(clips):
        frames, masks, body_ids, skeleton = _load(clip)
        assert frames.shape == (FIXTURE.frames, FIXTURE.height, FIXTURE.width, 3)
        assert masks.shape == (FIXTURE.frames, 2, FIXTURE.height, FIXTURE.width) and masks.dtype == bool
        assert not (masks[:, 0] & masks[:, 1]).any()  # modal masks: each pixel has one owner
        colors = [np.median(frames[masks[:, b]], axis=0) for b in (0, 1)]
        background = np.median(frames[~masks.any(axis=1)], axis=0)
        assert np.abs(colors[0] - colors[1]).sum() > 150  # clearly different figures
        on_own, right_colour = 0, 0
        for t, bodies in enumerate(skeleton.frames):
            assert [b.body_id for b in bodies] == body_ids
            front = int(np.argmin([b.joints[0, 2] for b in bodies]))  # smaller z is in front
            for b, body in enumerate(bodies):
                for x, y in np.round(body.color_xy).astype(int):
                    assert 0 <= x < FIXTURE.width and 0 <= y < FIXTURE.height
                    if masks[t, b, y, x]:
                        on_own += 1
                        pixel = frames[t, y, x]
                        dist = [np.abs(pixel - c).sum() for c in (colors[b], colors[1 - b], background)]
                        right_colour += int(np.argmin(dist) == 0)
                    else:  # hidden behind the other figure, never on the background
                        assert b != front and masks[t, front, y, x], (clip.name, t, b)
        assert on_own >= 0.8 * FIXTURE.frames * 2 * 25
        assert right_colour >= 0.97 * on_own, (clip.name, right_colour, on_own)


def test_skeleton_values_are_plausible(dataset):
    _, clips = dataset
    states = []
    for clip in _well_formed(clips):
        skeleton = read_skeleton(clip.skeleton)
        assert skeleton.num_frames == FIXTURE.frames
        assert (skeleton.tracked_bodies_per_frame() == 2).all()
        for bodies in skeleton.frames:
            for body in bodies:
                assert body.body_id > 2**56  # Kinect-like ids
                joints = body.joints
                assert ((joints[:, 2] > 2.0) & (joints[:, 2] < 5.0)).all()  # z, metres
                assert (np.abs(joints[:, 0]) < 3).all() and (joints[:, 1] > -1.3).all()
                assert ((joints[:, 3] >= 0) & (joints[:, 3] < 512) & (joints[:, 4] >= 0) & (joints[:, 4] < 424)).all()
                states.extend(joints[:, 11])
    states = np.array(states)
    assert set(np.unique(states)) <= {INFERRED, TRACKED}
    assert 0.9 < (states == TRACKED).mean() < 1.0


def test_deterministic(tmp_path):
    config = SyntheticConfig(relations=["A058", "A116"], clips_per_relation=1, frames=12, seed=7)
    first, second = generate_dataset(tmp_path / "a", config), generate_dataset(tmp_path / "b", config)
    assert [c.name for c in first] == [c.name for c in second]
    for a, b in zip(first, second):
        assert a.skeleton.read_bytes() == b.skeleton.read_bytes()
        assert np.array_equal(read_video(a.video)[0], read_video(b.video)[0])
        assert np.array_equal(np.load(a.masks)["masks"], np.load(b.masks)["masks"])
    other = generate_clip(tmp_path / "c", first[0].name, frames=12, seed=8)
    assert other.skeleton.read_bytes() != first[0].skeleton.read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motion_depends_on_relation(tmp_path, seed):
    def clip(action: int) -> SyntheticClip:
        return generate_clip(tmp_path, ClipName(1, 1, 1, 1, action), frames=30, seed=seed, masks=False)

    gap = lambda x: np.abs(x[:, 1] - x[:, 0])  # noqa: E731
    x = _root_x(clip(59))  # walking towards each other
    assert gap(x)[-1] < 0.5 * gap(x)[0] and (np.diff(gap(x)) <= 1e-6).all()
    x = _root_x(clip(60))  # walking apart
    assert gap(x)[-1] > 2.0 * gap(x)[0] and (np.diff(gap(x)) >= -1e-6).all()
    x = _root_x(clip(55))  # hugging
    assert gap(x)[-1] < 0.45 * gap(x)[0]
    x = _root_x(clip(52))  # A lunges at B, B recoils away from A
    towards_b = np.sign(x[0, 1] - x[0, 0])
    assert towards_b * (x[-1, 0] - x[0, 0]) > 10 and towards_b * (x[-1, 1] - x[0, 1]) > 10
    x = _root_x(clip(116))  # both walk the same way, keeping their distance
    moved = x[-1] - x[0]
    assert np.sign(moved[0]) == np.sign(moved[1]) and np.abs(moved).min() > 20
    assert 0.7 < gap(x)[-1] / gap(x)[0] < 1.4

    skeleton = read_skeleton(clip(58).skeleton)  # handshake: the hands meet, then part
    hands = np.array([[[b.color_xy[j] for j in (7, 11)] for b in bodies] for bodies in skeleton.frames])
    closest = np.array([np.linalg.norm(h[0][:, None] - h[1][None], axis=-1).min() for h in hands])
    assert closest[0] > 40 and closest.min() < 4 and closest[-1] > 3 * closest.min() + 10


def test_every_mutual_action_renders_inside_the_frame(tmp_path):
    assert sorted(RELATION_MOTIONS) == MUTUAL
    for relation in MUTUAL:
        clip = generate_clip(tmp_path, ClipName(1, 2, 3, 1, int(relation[1:])), frames=10, width=160, height=90)
        skeleton = read_skeleton(clip.skeleton)
        with np.load(clip.masks) as data:
            masks = data["masks"]
        for t, bodies in enumerate(skeleton.frames):
            for b, body in enumerate(bodies):
                x, y = np.round(body.color_xy).astype(int).T
                assert ((x >= 0) & (x < 160) & (y >= 0) & (y < 90)).all(), relation
                assert masks[t, :, y, x].any(axis=1).all(), relation  # each joint is on a figure


def test_fault_knobs(dataset):
    _, clips = dataset
    by_fault: dict[str | None, list[SyntheticClip]] = {}
    for clip in clips:
        by_fault.setdefault(clip.fault, []).append(clip)
    relations = len(FIXTURE.relations)
    assert {k: len(v) for k, v in by_fault.items()} == {
        None: relations, "missing_skeleton": relations, "single_body": relations, "short": relations
    }
    for clip in by_fault["missing_skeleton"]:
        assert clip.skeleton is None and clip.video.is_file()
        assert not (clip.video.parent.parent / "nturgb+d_skeletons" / f"{clip.name}.skeleton").exists()
    for clip in by_fault["single_body"]:
        tracked = read_skeleton(clip.skeleton).tracked_bodies_per_frame()
        assert (tracked >= 1).all() and (tracked >= 2).mean() < 0.5
        assert probe_video(clip.video).frames == FIXTURE.frames
    for clip in by_fault["short"]:
        assert clip.frames == FIXTURE.short_frames
        assert probe_video(clip.video).frames == FIXTURE.short_frames
        assert read_skeleton(clip.skeleton).num_frames == FIXTURE.short_frames


def test_complete_dataset_is_not_regenerated(tmp_path):
    config = SyntheticConfig(relations=["A059"], clips_per_relation=2, frames=8)
    clips = generate_dataset(tmp_path, config)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert generate_dataset(tmp_path, config) == clips
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes

    smaller = generate_dataset(tmp_path, config.model_copy(update={"clips_per_relation": 1, "masks": False}))
    assert [c.name for c in smaller] == [clips[0].name] and smaller[0].masks is None
    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert files == {smaller[0].video, smaller[0].skeleton, tmp_path / STAMP_NAME}  # stale files gone

    smaller[0].video.unlink()  # an incomplete dataset is regenerated
    generate_dataset(tmp_path, config.model_copy(update={"clips_per_relation": 1, "masks": False}))
    assert smaller[0].video.is_file()


def _real_dataset(folder):
    """A user's NTU folder: one real clip (its name collides with a synthetic one) and a notes file."""
    config = SyntheticConfig(relations=["A059"], clips_per_relation=1, frames=8)
    clip_name = plan_dataset(config)[0][0]
    video = folder / "nturgb+d_rgb" / f"{clip_name}_rgb.avi"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"the user's real recording")
    (folder / "README.txt").write_bytes(b"my dataset")
    return config, video


def test_generator_refuses_a_folder_it_does_not_own(tmp_path):
    config, video = _real_dataset(tmp_path / "nturgbd")
    before = {p: p.read_bytes() for p in (tmp_path / "nturgbd").rglob("*") if p.is_file()}
    with pytest.raises(DatasetFolderError, match=r"holds files the synthetic generator did not write \(README.txt"):
        generate_dataset(tmp_path / "nturgbd", config)
    after = {p: p.read_bytes() for p in (tmp_path / "nturgbd").rglob("*") if p.is_file()}
    assert after == before  # byte for byte, and nothing added (no stamp, no masks/)


def test_generator_never_creates_a_mistyped_root_unless_allowed(tmp_path):
    config = SyntheticConfig(relations=["A059"], clips_per_relation=1, frames=8)
    with pytest.raises(DatasetFolderError, match="does not exist"):
        generate_dataset(tmp_path / "nturgdb", config, create=False)
    assert not (tmp_path / "nturgdb").exists()
    (tmp_path / "empty").mkdir()  # an empty folder is claimed, stamped and filled
    assert generate_dataset(tmp_path / "empty", config, create=False)
    assert json.loads((tmp_path / "empty" / STAMP_NAME).read_text())["complete"] is True


def test_generator_never_overwrites_a_file_it_did_not_write(tmp_path):
    config = SyntheticConfig(relations=["A059"], clips_per_relation=1, frames=8)
    clips = generate_dataset(tmp_path, config)
    bigger = config.model_copy(update={"clips_per_relation": 2})
    new_clip = next(c for c in _expected(tmp_path, bigger) if c.name != clips[0].name)
    new_clip.video.write_bytes(b"dropped in by the user")  # where the next config will write
    with pytest.raises(DatasetFolderError, match="was not written by the generator"):
        generate_dataset(tmp_path, bigger)
    assert new_clip.video.read_bytes() == b"dropped in by the user"


def test_interrupted_generation_resumes_in_its_own_folder(tmp_path, monkeypatch):
    config = SyntheticConfig(relations=["A059"], clips_per_relation=2, frames=8)
    calls = []

    def dies_on_second_clip(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_generate_clip(*args, **kwargs)

    real_generate_clip = synthetic.generate_clip
    monkeypatch.setattr(synthetic, "generate_clip", dies_on_second_clip)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "ds", config)
    stamp = json.loads((tmp_path / "ds" / STAMP_NAME).read_text())
    assert stamp["complete"] is False and len(stamp["files"]) == 6  # claimed before writing
    monkeypatch.setattr(synthetic, "generate_clip", real_generate_clip)
    clips = generate_dataset(tmp_path / "ds", config)  # the folder is still its own: resumes
    assert all(c.video.is_file() for c in clips)


def test_config_validation():
    for name, field in SyntheticConfig.model_fields.items():
        assert field.description, f"{name} has no description"
    assert SyntheticConfig(relations=["58", 112]).relations == ["A058", "A112"]  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="not an NTU action id"):
        SyntheticConfig(relations=["hold_hands"])
    with pytest.raises(ValidationError, match="cameras"):
        SyntheticConfig(cameras=[4])
    with pytest.raises(ValidationError, match="short_frames"):
        SyntheticConfig(short=1, short_frames=40)
    with pytest.raises(ValueError, match="widen the pools"):
        generate_dataset("/nonexistent", SyntheticConfig(setups=[1], cameras=[1], performers=[1], clips_per_relation=3))


def test_mp4_output(tmp_path):
    clip = generate_clip(tmp_path, ClipName(18, 1, 2, 2, 112), frames=6, video_format="mp4", masks=False)
    assert clip.video.name == "S018C001P002R002A112_rgb.mp4" and clip.masks is None
    assert parse_file_name(clip.video.name) == (clip.name, "video")
    assert probe_video(clip.video).frames == 6
