import os

import pytest

from dreamrelation.data.captions import CaptionError, caption_manifest, load_clip_captions, write_sidecars
from dreamrelation.data.manifest import ClipRecord, Manifest
from dreamrelation.data.relations import get_relation


def _manifest(tmp_path):
    clips = []
    for i in (1, 2):
        video = tmp_path / f"S001C001P00{i}R001A058_rgb.avi"
        video.write_bytes(b"video")
        clips.append(ClipRecord(clip_id=video.name[:20], relation="A058", video=str(video), skeleton="x",
                                frames=40, fps=30, width=320, height=180))
    return Manifest(relation="A058", relation_name="handshaking", dataset_root=str(tmp_path), clips=clips)


def test_relation_caption_and_per_clip_override(tmp_path):
    manifest = _manifest(tmp_path)
    captioned = caption_manifest(manifest, get_relation("A058"), {"S001C001P002R001A058": "Two people shake hands."})
    assert [c.caption for c in captioned.clips] == ["A person is shaking hands with a person.", "Two people shake hands."]
    assert manifest.clips[0].caption is None  # the input is not modified


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_sidecar_layout(tmp_path, mode):
    manifest = caption_manifest(_manifest(tmp_path), get_relation("A058"))
    out = tmp_path / "out" / "A058"
    write_sidecars(manifest, str(out), mode)
    assert sorted(p.name for p in out.iterdir()) == [
        "S001C001P001R001A058.avi", "S001C001P001R001A058.txt", "S001C001P002R001A058.avi", "S001C001P002R001A058.txt"]
    assert (out / "S001C001P001R001A058.txt").read_text() == "A person is shaking hands with a person.\n"
    assert os.path.islink(out / "S001C001P001R001A058.avi") == (mode == "symlink")
    assert (out / "S001C001P001R001A058.avi").read_bytes() == b"video"


def test_caption_files(tmp_path):
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("clip_id,caption\nS001C001P001R001A058,Hands meet.\n")
    assert load_clip_captions(csv_file) == {"S001C001P001R001A058": "Hands meet."}
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("S001C001P001R001A058: Hands meet.\n")
    assert load_clip_captions(yaml_file) == {"S001C001P001R001A058": "Hands meet."}
    bad = tmp_path / "bad.csv"
    bad.write_text("clip,text\na,b\n")
    with pytest.raises(CaptionError, match="columns clip_id,caption"):
        load_clip_captions(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("S001C001P001R001A058: ''\n")
    with pytest.raises(CaptionError, match="empty caption for S001C001P001R001A058"):
        load_clip_captions(empty)
    with pytest.raises(CaptionError, match="does not exist"):
        load_clip_captions(tmp_path / "none.csv")
