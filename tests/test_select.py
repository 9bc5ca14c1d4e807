import pytest

from dreamrelation.data.relations import get_relation
from dreamrelation.data.select import SelectConfig, SelectionError, select_clips
from dreamrelation.data.video import VideoConfig

VIDEO = VideoConfig(num_frames=25, height=96, width=160, aspect=160 / 96)


def _select(root, relation="A058", **kwargs):
    return select_clips(get_relation(relation), SelectConfig(dataset_root=str(root), **kwargs), VIDEO)


def test_selection_is_deterministic_and_seed_dependent(synthetic_root):
    a = _select(synthetic_root, clips_per_relation=3, seed=1)
    b = _select(synthetic_root, clips_per_relation=3, seed=1)
    assert a.clip_ids == b.clip_ids and len(a.clip_ids) == 3
    assert a.clip_ids == sorted(a.clip_ids)
    assert all(c.relation == "A058" for c in a.clips)
    seeds = {tuple(_select(synthetic_root, clips_per_relation=3, seed=s).clip_ids) for s in range(6)}
    assert len(seeds) > 1


def test_every_faulty_clip_is_dropped_with_its_reason(synthetic_root):
    manifest = _select(synthetic_root, clips_per_relation=5)
    assert manifest.available == 5 and len(manifest.clips) == 5
    reasons = [d.reason for d in manifest.dropped]
    assert len(reasons) == 3
    assert any(r.startswith("no .skeleton file") for r in reasons)
    assert any(r.startswith("two tracked bodies in only") for r in reasons)
    assert any(r.startswith("too short:") and "25 needed" in r for r in reasons)
    clip = manifest.clips[0]
    assert (clip.width, clip.height, clip.fps) == (320, 180, 30.0)
    assert clip.video.endswith("_rgb.avi") and clip.skeleton.endswith(".skeleton")


def test_unsampled_usable_clips_are_listed(synthetic_root):
    manifest = _select(synthetic_root, clips_per_relation=2)
    assert sum(d.reason == "usable, not sampled" for d in manifest.dropped) == 3


@pytest.mark.parametrize("field, attr", [("cameras", "camera"), ("setups", "setup"), ("performers", "performer")])
def test_filters(synthetic_root, field, attr):
    from dreamrelation.data.ntu import parse_clip_name

    everything = _select(synthetic_root, clips_per_relation=5)
    values = sorted({getattr(parse_clip_name(c.clip_id), attr) for c in everything.clips})
    wanted = values[:1]
    manifest = _select(synthetic_root, clips_per_relation=5, on_shortage="take_all", **{field: wanted})
    kept = [getattr(parse_clip_name(c.clip_id), attr) for c in manifest.clips]
    assert kept and set(kept) == set(wanted)
    filtered = [d for d in manifest.dropped if d.reason.startswith(f"{attr} ")]
    expected = sum(getattr(parse_clip_name(c.clip_id), attr) not in wanted for c in everything.clips)
    assert len([d for d in filtered if d.reason.endswith(f"not in the requested {field} {wanted}")]) >= expected
    assert expected > 0 or len(values) == 1


def test_too_many_requested(synthetic_root, caplog):
    with pytest.raises(SelectionError, match=r"A058 has 5 usable clip\(s\), 50 requested \(3 dropped: .*take_all"):
        _select(synthetic_root, clips_per_relation=50)
    manifest = _select(synthetic_root, clips_per_relation=50, on_shortage="take_all")
    assert len(manifest.clips) == 5
    assert "only 5 usable clips, taking all" in caplog.text


def test_empty_and_missing_roots(tmp_path):
    with pytest.raises(SelectionError, match="contains no NTU clips"):
        _select(tmp_path)
    with pytest.raises(SelectionError, match="does not exist"):
        _select(tmp_path / "nope")


def test_relation_without_clips(synthetic_root):
    with pytest.raises(SelectionError, match="no clips of relation A059"):
        _select(synthetic_root, relation="A059")


def test_corrupt_video_is_dropped_with_reason(tmp_path, synthetic_root):
    import shutil

    root = tmp_path / "ntu"
    shutil.copytree(synthetic_root, root)
    victim = sorted((root / "nturgb+d_rgb").glob("*A112_rgb.avi"))[0]
    victim.write_bytes(b"not a video at all" * 100)
    manifest = _select(root, relation="A112", clips_per_relation=1)
    dropped = {d.clip_id: d.reason for d in manifest.dropped}
    reason = dropped[victim.name.removesuffix("_rgb.avi")]
    assert reason.startswith(f"unreadable video: cannot read video {victim}: ")
    assert "object at 0x" not in reason and "Opener" not in reason  # the path, not a file object's repr


def test_misnamed_clip_files_are_reported_not_ignored(tmp_path, synthetic_root):
    import shutil

    root = tmp_path / "ntu"
    shutil.copytree(synthetic_root, root)
    (root / "nturgb+d_rgb" / "S001C001P001R001A58_rgb.avi").write_bytes(b"x")  # 2-digit action
    (root / "nturgb+d_rgb" / "S001C004P001R001A058_rgb.avi").write_bytes(b"x")  # camera 4
    (root / "nturgb+d_rgb" / "S001C001P001R001A055_rgb.avi.txt").write_bytes(b"x")  # not clip-shaped
    manifest = _select(root, relation="A058", clips_per_relation=2)
    dropped = {d.clip_id: d.reason for d in manifest.dropped}
    assert dropped["S001C001P001R001A58_rgb.avi"].startswith("name does not match SsssCcccPpppRrrrAaaa")
    assert "camera C004 is outside C001-C003" in dropped["S001C004P001R001A058_rgb.avi"]
    other = _select(root, relation="A055", clips_per_relation=2)
    assert not [d for d in other.dropped if "does not match" in d.reason]


def test_selection_from_an_fsspec_url(synthetic_root):
    """An object-store root (here fsspec's in-memory filesystem) works like a local folder."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in sorted(synthetic_root.rglob("*A055*")):
        if path.suffix in (".avi", ".skeleton"):
            fs.put(str(path), f"/ntu-url/{path.parent.name}/{path.name}")
    local = _select(synthetic_root, relation="A055", clips_per_relation=3, seed=2)
    remote = _select("memory://ntu-url", relation="A055", clips_per_relation=3, seed=2)
    assert remote.clip_ids == local.clip_ids
    assert all(c.video.startswith("memory://") for c in remote.clips)
    assert [c.frames for c in remote.clips] == [c.frames for c in local.clips]


def test_skeletons_that_do_not_fit_the_video_are_dropped(tmp_path, synthetic_root):
    """A video resized after capture: its skeleton's colorX/colorY point outside the smaller frame."""
    import shutil

    from dreamrelation.data.video import read_video, resize_frames, write_video

    root = tmp_path / "ntu"
    shutil.copytree(synthetic_root, root)
    manifest = _select(root, relation="A058", clips_per_relation=5)
    victim = manifest.clips[0]
    frames, fps = read_video(victim.video)
    write_video(victim.video, resize_frames(frames, 90, 160), fps)  # 320x180 -> 160x90
    after = _select(root, relation="A058", clips_per_relation=4)
    reason = {d.clip_id: d.reason for d in after.dropped}[victim.clip_id]
    assert reason.startswith("skeleton does not fit the video: ")
    assert "outside the 160x90 frame" in reason
    assert victim.clip_id not in after.clip_ids
