import json
import subprocess
import sys
import textwrap

import pytest
import zarr

from dreamrelation.data.store import (
    ArtifactLockedError,
    ArtifactMissingError,
    ArtifactStore,
    StoreNotWritableError,
    disk_full_error,
    fingerprint,
    zarr_location,
)


def test_fingerprint_depends_on_config_inputs_and_code():
    base = fingerprint("select_clips", {"k": 20}, ["A058"], "1")
    assert base == fingerprint("select_clips", {"k": 20}, ["A058"], "1")
    assert len(base) == 16
    assert base != fingerprint("select_clips", {"k": 21}, ["A058"], "1")
    assert base != fingerprint("select_clips", {"k": 20}, ["A059"], "1")
    assert base != fingerprint("select_clips", {"k": 20}, ["A058"], "2")


def test_json_round_trip_and_marker(tmp_path):
    store = ArtifactStore(tmp_path)
    uri = store.write_json("relations/A058/manifest-x.json", {"a": 1}, meta={"fingerprint": "x"})
    assert uri == f"{tmp_path.resolve()}/relations/A058/manifest-x.json"
    assert store.is_complete("relations/A058/manifest-x.json")
    assert store.read_json("relations/A058/manifest-x.json") == {"a": 1}
    assert store.marker("relations/A058/manifest-x.json")["fingerprint"] == "x"
    assert store.list("relations/A058") == ["relations/A058/manifest-x.json"]


def test_failed_write_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with store.write("relations/A058/latents-x") as tmp:
            zarr.open_group(zarr_location(tmp), mode="w").create_array("a", shape=(2,), dtype="f4")
            raise RuntimeError("boom")
    assert not store.is_complete("relations/A058/latents-x")
    assert list((tmp_path / "relations" / "A058").iterdir()) == []
    with pytest.raises(ArtifactMissingError, match="missing or incomplete"):
        store.read_json("relations/A058/latents-x")


def test_write_killed_before_marker_is_never_complete(tmp_path):
    """A process killed (no cleanup at all) after moving data but before the marker."""
    script = textwrap.dedent(
        f"""
        import os
        from dreamrelation.data.store import ArtifactStore
        store = ArtifactStore({str(tmp_path)!r})
        store.fs.mv = lambda src, dst, recursive=False: (os.rename(src, dst), os._exit(9))
        with store.write("k.json") as tmp:
            open(tmp, "w").write("{{}}")
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    store = ArtifactStore(tmp_path)
    assert (tmp_path / "k.json").exists()  # the data landed ...
    assert not store.is_complete("k.json")  # ... but it is not readable as complete
    with pytest.raises(ArtifactMissingError):
        store.read_json("k.json")
    store.write_json("k.json", {"ok": True})  # a rerun replaces it
    assert store.read_json("k.json") == {"ok": True}


def test_killed_mid_write_leaves_only_a_partial(tmp_path):
    script = textwrap.dedent(
        f"""
        import os
        from dreamrelation.data.store import ArtifactStore
        with ArtifactStore({str(tmp_path)!r}).write("k.json") as tmp:
            open(tmp, "w").write("{{half")
            os._exit(9)
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert not (tmp_path / "k.json").exists()
    assert not ArtifactStore(tmp_path).is_complete("k.json")


def test_rewrite_replaces_previous(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_json("k.json", {"v": 1})
    store.write_json("k.json", {"v": 2})
    assert store.read_json("k.json") == {"v": 2}
    assert json.loads((tmp_path / "k.json.complete.json").read_text())["key"] == "k.json"


def test_fsspec_url_root_with_zarr():
    store = ArtifactStore("memory://dr-test/root")
    with store.write("relations/A058/masks-x.zarr") as tmp:
        assert tmp.startswith("memory://")
        group = zarr.open_group(zarr_location(tmp), mode="w")
        group.create_array("m", shape=(3,), dtype="i4")[:] = [1, 2, 3]
    uri = store.require("relations/A058/masks-x.zarr")
    assert uri == "memory://dr-test/root/relations/A058/masks-x.zarr"
    assert zarr.open_group(zarr_location(uri), mode="r")["m"][:].tolist() == [1, 2, 3]


@pytest.mark.parametrize("root", ["local", "memory://dr-inplace/root"])
def test_in_place_artifacts_keep_progress_across_failures(tmp_path, root):
    store = ArtifactStore(tmp_path / "store" if root == "local" else root)
    key = "relations/A058/runs/train-x"
    with pytest.raises(RuntimeError, match="killed"):
        with store.write_in_place(key, cache_dir=tmp_path / "work") as folder:
            (folder / "step-10").mkdir()
            (folder / "step-10" / "state.pt").write_text("ten")
            raise RuntimeError("killed")
    assert not store.is_complete(key)
    assert store.fs.exists(store.path(key) + "/step-10/state.pt")  # progress survives the failure
    if root != "local":
        import shutil

        shutil.rmtree(tmp_path / "work")  # another machine: nothing cached locally
    with store.write_in_place(key, {"summary": {"steps": 20}}, cache_dir=tmp_path / "work") as folder:
        assert (folder / "step-10" / "state.pt").read_text() == "ten"  # resumed from it
        (folder / "lora.safetensors").write_text("done")
    assert store.is_complete(key) and store.marker(key)["summary"] == {"steps": 20}
    assert store.fs.exists(store.path(key) + "/lora.safetensors")


@pytest.mark.parametrize("kind", ["a file", "under a file", "proc"])
def test_unwritable_root_is_one_clear_error(tmp_path, kind):
    blocker = tmp_path / "root.txt"
    blocker.write_bytes(b"a user's file")
    root, reason = {
        "a file": (blocker, "it is a file, not a folder"),
        "under a file": (blocker / "artifacts", "Not a directory"),
        "proc": ("/proc/dreamrelation-artifacts", "No such file or directory"),
    }[kind]
    with pytest.raises(StoreNotWritableError) as err:
        ArtifactStore(root).check_writable()
    assert str(err.value) == f"artifact root {root} is not writable: {reason}"
    assert blocker.read_bytes() == b"a user's file"


def test_writable_root_check_leaves_nothing_behind(tmp_path):
    ArtifactStore(tmp_path / "new" / "root").check_writable()
    assert list((tmp_path / "new" / "root").iterdir()) == []
    ArtifactStore("memory://probe-root").check_writable()


# -- one writer per artifact (issue 24.1) ---------------------------------------------------------
def test_second_writer_is_refused_naming_the_first(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.lock("relations/A058/latents-1", holder="a058-encode-latents-1"):
        lock_file = tmp_path / "relations/A058/latents-1.lock"
        assert json.loads(lock_file.read_text())["holder"] == "a058-encode-latents-1"
        with pytest.raises(ArtifactLockedError) as refused:
            with store.lock("relations/A058/latents-1", holder="second"):
                pytest.fail("two writers held one artifact")
        message = str(refused.value)
        assert "is being built by run 'a058-encode-latents-1' (pid " in message
        assert str(tmp_path / "relations/A058/latents-1") in message
        with store.lock("relations/A058/masks-1", holder="other artifact"):  # locks are per artifact
            pass
    assert not lock_file.exists()
    with store.lock("relations/A058/latents-1", holder="after"):  # free again once released
        pass


def test_lock_of_a_killed_holder_is_free(tmp_path):
    """The kernel drops a flock when its process dies, even by SIGKILL: no stale lock to clean by hand."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from dreamrelation.data.store import ArtifactStore
        with ArtifactStore({str(tmp_path)!r}).lock("k", holder="doomed"):
            print("held", flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(ArtifactLockedError, match="run 'doomed'"):
            with ArtifactStore(tmp_path).lock("k", holder="me"):
                pass
    finally:
        child.kill()
        child.wait()
    with ArtifactStore(tmp_path).lock("k", holder="me"):
        assert json.loads((tmp_path / "k.lock").read_text())["holder"] == "me"


def test_object_store_lease_refuses_while_fresh_and_is_taken_over_when_expired(monkeypatch):
    monkeypatch.setattr("dreamrelation.data.store.time.sleep", lambda seconds: None)
    store = ArtifactStore("memory://lease-test")
    with store.lock("runs/train-1", holder="first"):
        with pytest.raises(ArtifactLockedError, match="being built by run 'first'.*a lease on the object store"):
            with store.lock("runs/train-1", holder="second"):
                pass
    assert not store.fs.exists(store.path("runs/train-1.lock"))
    with store.fs.open(store.path("runs/train-1.lock"), "w") as handle:  # a holder that died long ago
        json.dump({"holder": "dead", "token": "x", "expires": 0}, handle)
    with store.lock("runs/train-1", holder="second"):
        assert json.load(store.fs.open(store.path("runs/train-1.lock")))["holder"] == "second"


def test_remove_partials_only_touches_the_keys_own_leftovers(tmp_path):
    store = ArtifactStore(tmp_path)
    for name in ("latents-1.partial-0a1b", "latents-1.partial-ffff", "latents-12.partial-0000", "latents-1"):
        (tmp_path / "r" / name).mkdir(parents=True)
    store.remove_partials("r/latents-1")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["latents-1", "latents-12.partial-0000"]


def test_disk_full_error_is_found_in_wrapped_errors():
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", "/data/x.zarr/c/0")
    try:
        try:
            raise full
        except OSError as exc:
            raise RuntimeError("zarr could not store chunk") from exc
    except RuntimeError as wrapped:
        assert disk_full_error(wrapped) is full
    assert disk_full_error(RuntimeError("[enforce fail] file write failed: No space left on device")).errno == errno.ENOSPC
    assert disk_full_error(ValueError("bad value")) is None
    assert disk_full_error(OSError(errno.ENOENT, "No such file")) is None
