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
    manifest = _select(synthetic_root, clips_per_relation=5, check_all=True)
    assert manifest.check_all and manifest.unchecked == 0 and manifest.candidates == 8
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
    manifest = _select(synthetic_root, clips_per_relation=2, check_all=True)
    assert sum(d.reason == "usable, not sampled" for d in manifest.dropped) == 3
    assert manifest.available == 5 and len(manifest.checked) == 8


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
    manifest = _select(root, relation="A112", clips_per_relation=1, check_all=True)
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
    after = _select(root, relation="A058", clips_per_relation=4, check_all=True)
    reason = {d.clip_id: d.reason for d in after.dropped}[victim.clip_id]
    assert reason.startswith("skeleton does not fit the video: ")
    assert "outside the 160x90 frame" in reason
    assert victim.clip_id not in after.clip_ids


# -- lazy selection, determinism, caches (issue 15) -----------------------------------------------
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

from dreamrelation.data import listing as listing_module  # noqa: E402
from dreamrelation.data import select as select_module  # noqa: E402
from dreamrelation.data.listing import cache_key, forget_listings, list_dataset  # noqa: E402
from dreamrelation.data.manifest import Manifest  # noqa: E402
from dreamrelation.data.store import ArtifactStore  # noqa: E402


@pytest.fixture
def measured(monkeypatch):
    """Clip ids whose files were opened (measure_clip calls), in call order."""
    calls = []
    real = select_module.measure_clip

    def counting(files, local):
        calls.append(str(files.clip))
        return real(files, local)

    monkeypatch.setattr(select_module, "measure_clip", counting)
    return calls


@pytest.fixture
def walks(monkeypatch):
    """Number of local tree walks."""
    count = []
    real = listing_module._walk_local

    def counting(path):
        count.append(path)
        return real(path)

    monkeypatch.setattr(listing_module, "_walk_local", counting)
    return count


def _copy(synthetic_root, tmp_path, age_s=60.0):
    """A private copy of the synthetic dataset whose folders changed `age_s` ago (not racy)."""
    root = tmp_path / "ntu"
    shutil.copytree(synthetic_root, root)
    past = time.time() - age_s
    for folder in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.utime(folder, (past, past))
    return root


def _run(root, store=None, relation="A058", refresh=False, workers=None, **kwargs):
    config = SelectConfig(dataset_root=str(root), **kwargs)
    return select_clips(get_relation(relation), config, VIDEO, store=store, refresh=refresh, workers=workers)


def test_lazy_selection_opens_only_the_clips_it_needs(synthetic_root, measured):
    manifest = _select(synthetic_root, clips_per_relation=2, seed=4)
    assert not manifest.check_all and manifest.candidates == 8
    dropped = {d.clip_id: d.reason for d in manifest.dropped}
    openable = [c for c in manifest.checked if not dropped.get(c, "").startswith("no .skeleton file")]
    assert measured == openable  # each checked clip opened once, in the seeded order
    assert manifest.unchecked == 8 - len(manifest.checked) > 0
    assert manifest.available == 2 and len(manifest.clips) == 2
    assert manifest.checked[-1] in manifest.clip_ids  # it stopped at the second usable clip
    assert set(manifest.checked) == set(manifest.clip_ids) | set(dropped)
    assert "usable, not sampled" not in dropped.values()


@pytest.mark.parametrize("seed", range(4))
def test_lazy_and_check_all_choose_the_same_clips(synthetic_root, seed):
    for k in (1, 3, 5):
        lazy = _select(synthetic_root, clips_per_relation=k, seed=seed)
        full = _select(synthetic_root, clips_per_relation=k, seed=seed, check_all=True)
        assert lazy.clip_ids == full.clip_ids
        assert full.checked[: len(lazy.checked)] == lazy.checked  # lazy is a prefix of the same walk
        assert full.unchecked == 0 and full.available == 5 and len(full.checked) == 8


def test_selection_does_not_depend_on_listing_order(tmp_path, synthetic_root, monkeypatch):
    import random

    root = _copy(synthetic_root, tmp_path)
    expected = {k: _run(root, refresh=True, clips_per_relation=3, seed=9, check_all=k).model_dump() for k in (0, 1)}
    real_scandir = os.scandir
    for shuffle_seed in range(3):
        rng = random.Random(shuffle_seed)

        def shuffled(path, rng=rng):
            entries = list(real_scandir(path))
            rng.shuffle(entries)
            return iter(entries)

        monkeypatch.setattr(os, "scandir", shuffled)
        for check_all in (0, 1):
            manifest = _run(root, refresh=True, clips_per_relation=3, seed=9, check_all=check_all)
            assert manifest.model_dump() == expected[check_all]
    monkeypatch.setattr(os, "scandir", real_scandir)


def test_every_usable_clip_is_chosen_for_some_seed(synthetic_root):
    usable = set(_select(synthetic_root, clips_per_relation=5, check_all=True).clip_ids)
    chosen = Counter(c for seed in range(40) for c in _select(synthetic_root, clips_per_relation=2, seed=seed).clip_ids)
    assert set(chosen) == usable
    assert max(chosen.values()) <= 28  # 80 draws of 5 clips: 16 each on average


def test_check_cache_rechecks_nothing_for_a_new_k_seed_or_threshold(tmp_path, synthetic_root, measured):
    store = ArtifactStore(tmp_path / "artifacts")
    everything = _select(synthetic_root, clips_per_relation=5, check_all=True)
    no_skeleton = {d.clip_id for d in everything.dropped if d.reason.startswith("no .skeleton")}
    assert len(no_skeleton) == 1
    measured.clear()
    first = _run(synthetic_root, store, clips_per_relation=2, seed=1)
    assert measured == [c for c in first.checked if c not in no_skeleton] and len(measured) >= 2
    assert first.model_dump() == _select(synthetic_root, clips_per_relation=2, seed=1).model_dump()  # no cache
    measured.clear()
    assert _run(synthetic_root, store, clips_per_relation=2, seed=1).model_dump() == first.model_dump()
    assert measured == []
    other = _run(synthetic_root, store, clips_per_relation=3, seed=5)
    seen = set(first.checked)
    assert measured == [c for c in other.checked if c not in seen and c not in no_skeleton]
    seen |= set(other.checked)
    measured.clear()
    full = _run(synthetic_root, store, clips_per_relation=5, check_all=True)
    assert measured == [c for c in full.checked if c not in seen and c not in no_skeleton] and full.available == 5
    measured.clear()
    loose = _run(synthetic_root, store, clips_per_relation=5, check_all=True, min_two_body_fraction=0.0)
    assert measured == []  # the cache holds measurements, not verdicts
    assert loose.available == 6  # the one-body clip passes a zero threshold
    key = next(k for k in (tmp_path / "artifacts" / "cache" / "select-checks").rglob("A058.json.gz"))
    assert key.stat().st_size > 0


def test_a_changed_file_is_checked_again(tmp_path, synthetic_root, measured):
    root = _copy(synthetic_root, tmp_path)
    store = ArtifactStore(tmp_path / "artifacts")
    full = _run(root, store, clips_per_relation=5, check_all=True)
    victim = full.clips[0]
    Path(victim.video).write_bytes(b"now garbage")
    measured.clear()
    after = _run(root, store, clips_per_relation=4, check_all=True)
    assert measured == [victim.clip_id]
    assert {d.clip_id: d.reason for d in after.dropped}[victim.clip_id].startswith("unreadable video: cannot read")
    assert after.available == 4


def test_a_malformed_skeleton_is_dropped_with_the_readers_message(tmp_path, synthetic_root):
    root = _copy(synthetic_root, tmp_path)
    manifest = _run(root, clips_per_relation=5, check_all=True)
    victim = Path(manifest.clips[0].skeleton)
    victim.write_text("\n".join(victim.read_text().splitlines()[:30]) + "\n")
    after = _run(root, clips_per_relation=4, check_all=True)
    reason = {d.clip_id: d.reason for d in after.dropped}[manifest.clips[0].clip_id]
    assert reason.startswith(f"unreadable skeleton: {victim}: file ends after line 30")


def test_listing_is_walked_once_and_shared_through_the_store(tmp_path, synthetic_root, walks):
    root = _copy(synthetic_root, tmp_path)
    store = ArtifactStore(tmp_path / "artifacts")
    first = list_dataset(str(root), cache=store)
    assert list_dataset(str(root), cache=store) is first and len(walks) == 1
    assert not first.racy and first.files == len(list((root / "nturgb+d_rgb").iterdir())) + len(
        list((root / "nturgb+d_skeletons").iterdir())
    )
    forget_listings()  # as in another process of the fan-out
    shared = list_dataset(str(root), cache=store)
    assert len(walks) == 1 and shared is not first
    assert shared.clips("A058") == first.clips("A058") and shared.groups == first.groups
    (root / "nturgb+d_rgb" / "S009C001P001R001A058_rgb.avi").write_bytes(b"x")  # its folder's mtime changes
    grown = list_dataset(str(root), cache=store)
    assert len(walks) == 2 and "S009C001P001R001A058" in [str(f.clip) for f in grown.clips("A058")]
    assert grown.racy  # listed within 2 s of a change: never reused
    list_dataset(str(root), cache=store)
    assert len(walks) == 3
    store.write_cache(cache_key(str(root)), b"not a listing")
    forget_listings()
    assert list_dataset(str(root), cache=store).clips("A058") == grown.clips("A058")  # a bad cache is ignored


def test_a_url_listing_is_reused_for_its_max_age():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/listing-age/rgb/S001C001P001R001A058_rgb.avi", b"video")
    first = list_dataset("memory://listing-age")
    fs.pipe("/listing-age/skel/S001C001P001R001A058.skeleton", b"skeleton")
    assert list_dataset("memory://listing-age") is first  # an object store has no cheap change signal
    fresh = list_dataset("memory://listing-age", refresh=True)
    (clip,) = fresh.clips("A058")
    assert clip.skeleton == "memory:///listing-age/skel/S001C001P001R001A058.skeleton"
    assert clip.video_id.startswith("5:") and clip.skeleton_id.startswith("8:")  # size + version tag
    assert list_dataset("memory://listing-age", max_age_s=0) is not fresh


def test_url_roots_are_checked_in_parallel_with_the_same_result(synthetic_root, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in sorted(synthetic_root.rglob("*A058*")):
        if path.suffix in (".avi", ".skeleton"):
            fs.put(str(path), f"/ntu-parallel/{path.parent.name}/{path.name}")
    store = ArtifactStore(tmp_path / "artifacts")
    for check_all in (False, True):
        serial = _run("memory://ntu-parallel", clips_per_relation=3, seed=3, check_all=check_all, workers=1)
        parallel = _run("memory://ntu-parallel", store, clips_per_relation=3, seed=3, check_all=check_all)
        local = _run(synthetic_root, clips_per_relation=3, seed=3, check_all=check_all)
        assert parallel.model_dump() == serial.model_dump()
        assert parallel.clip_ids == local.clip_ids and parallel.checked == local.checked
        assert [d.reason.split(":")[0] for d in parallel.dropped] == [d.reason.split(":")[0] for d in local.dropped]


def test_old_manifests_still_load():
    old = {"relation": "A058", "relation_name": "handshaking", "dataset_root": "/ntu", "clips": [], "dropped": [],
           "available": 4, "config": {}, "fingerprint": "x"}
    manifest = Manifest.model_validate(old)
    assert manifest.check_all and manifest.checked == [] and manifest.unchecked == 0 and manifest.candidates == 0


def test_select_config_fields_are_described():
    assert all(field.description for field in SelectConfig.model_fields.values())
    with pytest.raises(ValueError, match="did you mean 'check_all'"):
        SelectConfig(check_al=True)


def test_store_cache_entries_are_whole_or_absent(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    assert store.read_cache("cache/listings/x.json.gz") is None
    for data in (b"one", b"two"):
        assert store.write_cache("cache/listings/x.json.gz", data)
        assert store.read_cache("cache/listings/x.json.gz") == data
    assert [p.name for p in (tmp_path / "artifacts" / "cache" / "listings").iterdir()] == ["x.json.gz"]  # no leftovers
    (tmp_path / "file").write_text("not a folder")
    assert ArtifactStore(tmp_path / "file").write_cache("cache/x", b"data") is False  # a cache never fails a stage
    remote = ArtifactStore("memory://cache-test")
    assert remote.write_cache("cache/y", b"data") and remote.read_cache("cache/y") == b"data"


# -- what the select key is made of (issue 24 §3) ----------------------------------------------------
from dreamrelation.config import PipelineConfig  # noqa: E402
from dreamrelation.plan import plan_relation  # noqa: E402


def _ntu_config(dataset_root, tmp_path) -> PipelineConfig:
    return PipelineConfig(root=str(tmp_path / "artifacts"), synthetic=None,
                          select={"dataset_root": str(dataset_root), "clips_per_relation": 3})


def test_a_relative_dataset_root_gets_one_key_per_folder(tmp_path, synthetic_root, monkeypatch):
    """Two folders holding byte-identical datasets (copytree keeps mtimes): only the resolved root tells them apart."""
    for name in ("a", "b"):
        shutil.copytree(synthetic_root, tmp_path / name / "ntu")
    config = _ntu_config("ntu", tmp_path)
    keys = {}
    for name in ("a", "b", "a"):
        monkeypatch.chdir(tmp_path / name)
        keys.setdefault(name, set()).add(plan_relation("A058", config)["select_clips"].key)
    assert len(keys["a"]) == 1 and keys["a"] != keys["b"]
    assert keys["a"] == {plan_relation("A058", _ntu_config(tmp_path / "a" / "ntu", tmp_path))["select_clips"].key}
    assert config.select.dataset_root == "ntu"  # the config itself keeps what the user wrote


def test_an_ntu_file_edited_in_place_gets_a_new_select_key(tmp_path, synthetic_root):
    root = _copy(synthetic_root, tmp_path)
    config = _ntu_config(root, tmp_path)
    before, other = plan_relation("A058", config), plan_relation("A055", config)
    assert plan_relation("A058", config) == before  # stable
    skeleton = next((root / "nturgb+d_skeletons").glob("*A058.skeleton"))
    folder_mtime = skeleton.parent.stat().st_mtime_ns
    with skeleton.open("a") as handle:  # in place: the folder's mtime (the listing's signal) does not move
        handle.write("\n")
    assert skeleton.parent.stat().st_mtime_ns == folder_mtime
    edited = plan_relation("A058", config)
    for stage in ("select_clips", "write_captions", "make_masks", "train_relation", "evaluate"):
        assert edited[stage].fingerprint != before[stage].fingerprint
    stat = skeleton.stat()
    os.utime(skeleton, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, new mtime
    assert plan_relation("A058", config)["select_clips"] != edited["select_clips"]
    assert plan_relation("A055", config) == other  # another relation's files did not change


def test_keys_of_an_ntu_root_cost_one_walk_and_a_missing_root_still_plans(tmp_path, synthetic_root, walks):
    root = _copy(synthetic_root, tmp_path)
    forget_listings()
    config = _ntu_config(root, tmp_path)
    for relation in ["A058", "A055", "A112"] * 20:
        plan_relation(relation, config)
    assert len(walks) == 1  # the listing selection uses, not a walk per key
    missing = plan_relation("A058", _ntu_config(tmp_path / "not-yet", tmp_path))  # e.g. the demo before generation
    assert missing["select_clips"] != plan_relation("A058", config)["select_clips"]


def test_a_url_root_keys_on_the_listed_file_versions():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/key-versions/rgb/S001C001P001R001A058_rgb.avi", b"video")
    fs.pipe("/key-versions/skeletons/S001C001P001R001A058.skeleton", b"skeleton")
    config = PipelineConfig(root="memory://key-versions-artifacts", synthetic=None,
                            select={"dataset_root": "memory://key-versions", "clips_per_relation": 1})
    before = plan_relation("A058", config)["select_clips"]
    assert before.key == plan_relation("A058", config)["select_clips"].key
    fs.pipe("/key-versions/skeletons/S001C001P001R001A058.skeleton", b"skeleton, edited")
    forget_listings()
    assert plan_relation("A058", config)["select_clips"] == before  # a URL listing is trusted for an hour ...
    list_dataset(config.select.dataset_root, cache=ArtifactStore(config.root), refresh=True)  # ... or until `force`
    assert plan_relation("A058", config)["select_clips"].key != before.key


def test_small_input_files_are_keyed_by_their_bytes(tmp_path, synthetic_root):
    captions, prompts = tmp_path / "captions.csv", tmp_path / "prompts.csv"
    captions.write_text("clip_id,caption\nS001C001P001R001A058,A person greets a person.\n")
    prompts.write_text("relation,prompt\nA058,A bear is shaking hands with a raccoon.\n")
    config = _ntu_config(synthetic_root, tmp_path)
    config = config.model_copy(update={
        "captions": config.captions.model_copy(update={"captions_file": str(captions)}),
        "evaluate": config.evaluate.model_copy(update={"prompts_path": str(prompts)}),
    })
    before = plan_relation("A058", config)
    prompts.write_text("relation,prompt\nA058,A dog is shaking hands with a cat.\n")
    after = plan_relation("A058", config)
    assert after["train_relation"] == before["train_relation"] and after["evaluate"] != before["evaluate"]
    captions.write_text("clip_id,caption\nS001C001P001R001A058,A person welcomes a person.\n")
    edited = plan_relation("A058", config)
    assert edited["select_clips"] == before["select_clips"] and edited["write_captions"] != before["write_captions"]
