"""The relational toy world (issue 13 §1): pixels agree with ground truth, seeds, pools, captions, files."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from dreamrelation.data.video import read_video
from dreamrelation.data.world import (
    INDEX_NAME,
    KINDS,
    PALETTE,
    RELATIONS,
    ClipSpec,
    SubjectSpec,
    WorldConfig,
    WorldFolderError,
    caption,
    degrade_video,
    load_arrays,
    luma,
    parse_caption,
    read_world_dataset,
    render_clip,
    sample_specs,
    write_world_dataset,
)

CONFIG = WorldConfig()


@pytest.fixture(scope="module")
def clips():
    """Five clips per relation, all kinds mixed."""
    return [render_clip(spec, CONFIG) for spec in sample_specs(CONFIG, 5 * len(RELATIONS), seed=11)]


def test_vocabulary_meets_the_issue():
    assert len(RELATIONS) >= 6 and len(KINDS) >= 6 and "person" in KINDS and len(PALETTE) >= 6
    background = CONFIG.background_luma
    for variants in PALETTE.values():  # the contrast sign holds for every colour and background
        assert luma(variants["dark"]) <= background[0] - 40
        assert luma(variants["light"]) >= background[1] + 40


def test_clip_format(clips):
    clip = clips[0]
    t, h, w = CONFIG.frames, CONFIG.height, CONFIG.width
    assert (t, h, w) == (25, 64, 96)
    assert clip.video.shape == (t, h, w, 3) and clip.video.dtype == np.uint8
    assert clip.masks.shape == (t, 2, h, w) and clip.masks.dtype == bool
    assert clip.trajectories.shape == (t, 2, 2)
    assert [a["kind"] for a in clip.attributes] == [s.kind for s in clip.spec.subjects]


def test_masks_agree_with_trajectories_and_pixels(clips):
    for clip in clips:
        assert not (clip.masks[:, 0] & clip.masks[:, 1]).any()  # modal masks never share a pixel
        assert clip.masks.any(axis=(2, 3)).all()  # both subjects visible in every frame
        for i, subject in enumerate(clip.spec.subjects):
            # Mask pixels carry the subject's colour (anti-aliased edges aside).
            pixels = clip.video[clip.masks[:, i]].astype(int)
            assert np.abs(np.median(pixels, axis=0) - subject.rgb).max() <= 2
            size = subject.size * CONFIG.height
            for k in range(CONFIG.frames):
                mask = clip.masks[k, i]
                apart = not (cv2.dilate(clip.masks[k, 1 - i].astype(np.uint8), np.ones((5, 5))) & mask).any()
                ys, xs = np.nonzero(mask)
                centre = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
                if apart:  # unoccluded: the box centre is the trajectory point
                    assert np.abs(centre - clip.trajectories[k, i]).max() <= 1.0
                    assert np.hypot(*(np.array([xs.mean(), ys.mean()]) - clip.trajectories[k, i])) <= 0.25 * size
        # Away from both masks (anti-aliased edges lie just outside them) the frame is background.
        near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((3, 3))) for m in clip.masks.any(axis=1)])
        background = clip.video[near == 0]
        assert np.abs(luma(background) - np.median(luma(background))).max() < 30


def test_relations_show_in_trajectories(clips):
    """The defining motion of each relation, measured on the ground-truth centres."""
    for clip in clips:
        p = clip.trajectories.astype(float)
        d = np.linalg.norm(p[:, 0] - p[:, 1], axis=1)
        travel = np.linalg.norm(p[-1] - p[0], axis=1)
        relation = clip.spec.relation
        if relation == "approach":
            assert d[-1] < 0.7 * d[0]
        elif relation == "apart":
            assert d[-1] > 1.5 * d[0]
        elif relation == "push":  # the actor moves first, the other after the contact
            hit = int(np.argmin(d))
            moved = np.linalg.norm(p[hit] - p[0], axis=1)
            assert moved[0] > 3 * moved[1] and np.linalg.norm(p[-1, 1] - p[hit, 1]) > 8
        elif relation == "follow":
            v = p[-1] - p[0]
            assert v[0] @ v[1] > 0 and travel.min() > 20
        elif relation in ("shake_hands", "hug"):
            assert d.min() < 0.6 * d[0] and (d[-1] > 1.5 * d.min()) == (relation == "shake_hands")
        elif relation == "orbit":
            angle = np.unwrap(np.arctan2(*(p[:, 0] - p[:, 1]).T[::-1]))
            assert abs(angle[-1] - angle[0]) > 1.5 * np.pi and travel[1] < 1


def test_render_is_deterministic_and_seed_dependent():
    spec = sample_specs(CONFIG, 1, seed=4)[0]
    a, b = render_clip(spec, CONFIG), render_clip(spec, CONFIG)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.masks, b.masks)
    other = render_clip(spec.model_copy(update={"seed": spec.seed + 1}), CONFIG)
    assert not np.array_equal(a.trajectories, other.trajectories)


def test_render_only_the_actor():
    """`drawn=(0,)` (the single-subject diagnostic): the other subject moves but is not painted."""
    spec = sample_specs(CONFIG, 1, seed=4)[0]
    both, alone = render_clip(spec, CONFIG), render_clip(spec, CONFIG, drawn=(0,))
    assert not alone.masks[:, 1].any() and alone.masks[:, 0].sum() >= both.masks[:, 0].sum()
    assert np.array_equal(alone.trajectories, both.trajectories) and alone.caption == both.caption
    away = ~(both.masks[:, 0] | both.masks[:, 1])  # background: the same pixels either way
    near = cv2.dilate(both.masks[:, 1].any(axis=0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.array_equal(alone.video[away & ~near], both.video[away & ~near])
    gone = both.masks[:, 1] & ~alone.masks[:, 0]  # the other subject's pixels are background now
    assert gone.sum() > 100 and np.abs(alone.video[gone].astype(int) - both.video[gone]).mean() > 40


def test_sample_specs_pools_and_determinism():
    assert sample_specs(CONFIG, 20, seed=3) == sample_specs(CONFIG, 20, seed=3)
    assert sample_specs(CONFIG, 20, seed=3) != sample_specs(CONFIG, 20, seed=4)
    targets = ["shake_hands", "push"]
    pretraining = sample_specs(CONFIG, 100, relations=[r for r in RELATIONS if r not in targets], seed=0)
    assert not {s.relation for s in pretraining} & set(targets)
    counts = np.unique([s.relation for s in pretraining], return_counts=True)[1]
    assert counts.max() - counts.min() <= 1  # balanced
    exemplars = sample_specs(CONFIG, 20, relations=["push"], kinds=["person"], seed=0)
    assert all(s.relation == "push" and {x.kind for x in s.subjects} == {"person"} for s in exemplars)
    held_out = sample_specs(CONFIG, 40, relations=["push"], kinds=[k for k in KINDS if k != "person"], seed=0)
    assert all(x.kind != "person" for s in held_out for x in s.subjects)
    for spec in pretraining:  # one dark and one light subject; sizes from the config
        assert sorted(x.contrast for x in spec.subjects) == ["dark", "light"]
        assert all(CONFIG.size_range[0] <= x.size <= CONFIG.size_range[1] for x in spec.subjects)
    with pytest.raises(ValueError, match="relations"):
        sample_specs(CONFIG, 3, relations=["dance"])


def test_captions_name_both_subjects_and_the_relation(clips):
    spec = ClipSpec(relation="push", seed=0, subjects=(
        SubjectSpec(kind="triangle", contrast="dark", colour="red", size=0.3),
        SubjectSpec(kind="circle", contrast="light", colour="blue", size=0.3)))
    assert caption(spec) == "A dark red triangle is pushing a light blue circle."
    plain = WorldConfig(caption_contrast=False)
    assert caption(spec.model_copy(update={"subjects": (spec.subjects[0].model_copy(update={"colour": "orange"}),
                                                         spec.subjects[1])}), plain) == \
        "An orange triangle is pushing a blue circle."
    for clip in clips:
        relation, (actor, other) = parse_caption(clip.caption)
        assert relation == clip.spec.relation and RELATIONS[relation].verb in clip.caption
        for said, subject in zip((actor, other), clip.spec.subjects):
            assert (said.kind, said.contrast, said.colour) == (subject.kind, subject.contrast, subject.colour)
    with pytest.raises(ValueError, match="not a toy-world caption"):
        parse_caption("A bear is shaking hands with a raccoon in a meadow.")


def test_config_is_strict_and_checked():
    with pytest.raises(ValidationError, match="did you mean 'frames'"):
        WorldConfig(frame=25)
    with pytest.raises(ValidationError, match="6k\\+1"):
        WorldConfig(frames=24)
    with pytest.raises(ValidationError, match="multiple of 16"):
        WorldConfig(height=60)
    with pytest.raises(ValidationError, match="size_range"):
        WorldConfig(size_range=(0.3, 0.2))
    with pytest.raises(ValidationError, match="unknown kind"):
        SubjectSpec(kind="bear", contrast="dark", colour="red", size=0.3)
    fields = WorldConfig.model_fields
    assert all(f.description for f in fields.values())


def test_degrade_video_is_seeded(clips):
    video = clips[0].video
    a, b = degrade_video(video, 1), degrade_video(video, 1)
    assert np.array_equal(a, b) and a.shape == video.shape and a.dtype == np.uint8
    assert not np.array_equal(a, degrade_video(video, 2))
    assert np.array_equal(degrade_video(video, 1, strength=0.0), video)


def test_write_world_dataset_files_index_and_ownership(tmp_path):
    config = WorldConfig(video_format="mp4")
    specs = sample_specs(config, 3, seed=2)
    folder = tmp_path / "world"
    records = write_world_dataset(folder, specs, config)
    index = json.loads((folder / INDEX_NAME).read_text())
    assert index["complete"] and len(index["clips"]) == 3 and len(index["files"]) == 9
    for record in records:
        arrays = load_arrays(record)
        clip = render_clip(record.spec, config)
        assert np.array_equal(arrays["video"], clip.video) and np.array_equal(arrays["masks"], clip.masks)
        assert np.allclose(arrays["trajectories"], clip.trajectories)
        assert record.caption_file.read_text().strip() == clip.caption
        frames, _ = read_video(record.video)
        assert frames.shape == clip.video.shape
    assert read_world_dataset(folder)[1] == records

    # Complete: a second call writes nothing.
    stamp = records[0].video.stat().st_mtime_ns
    os.utime(records[0].video, ns=(stamp - 10**9, stamp - 10**9))
    write_world_dataset(folder, specs, config)
    assert records[0].video.stat().st_mtime_ns == stamp - 10**9

    # A file the generator did not write is never overwritten, and stops the run.
    more = sample_specs(config, 4, seed=2)
    sentinel = folder / "captions" / f"00003_{more[3].relation}.txt"
    sentinel.write_text("mine")
    with pytest.raises(WorldFolderError, match="refusing to overwrite"):
        write_world_dataset(folder, more, config)
    assert sentinel.read_text() == "mine"
    sentinel.unlink()

    # Fewer clips: the generator removes only its own files that are no longer wanted.
    keep = folder / "notes.txt"
    write_world_dataset(folder, specs[:2], config)
    assert not records[2].video.exists() and records[1].video.exists()
    keep.write_text("mine")  # a foreign file next to an owned dataset survives rewrites
    write_world_dataset(folder, specs[:1], config)
    assert keep.read_text() == "mine"

    # A folder with foreign files that holds no index is refused.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "sentinel.bin").write_bytes(b"x")
    with pytest.raises(WorldFolderError, match="did not write"):
        write_world_dataset(foreign, specs, config)
    assert os.listdir(foreign) == ["sentinel.bin"]
