import pytest

from dreamrelation.data.ntu import ClipName, ClipNameError, normalize_relation_id, parse_clip_name, parse_file_name
from dreamrelation.data.relations import NTU_MUTUAL_RELATIONS, RelationError, get_relation, load_relation_table


def test_parse_clip_name_fields_and_round_trip():
    clip = parse_clip_name("S018C002P042R001A112")
    assert clip == ClipName(setup=18, camera=2, performer=42, replication=1, action=112)
    assert str(clip) == "S018C002P042R001A112"
    assert clip.relation == "A112"


@pytest.mark.parametrize(
    "file_name, kind",
    [
        ("S001C001P001R001A058_rgb.avi", "video"),
        ("nturgb+d_rgb/S001C001P001R001A058_rgb.mp4", "video"),
        ("S001C001P001R001A058.mp4", "video"),
        ("S001C001P001R001A058.skeleton", "skeleton"),
    ],
)
def test_parse_file_name_kinds(file_name, kind):
    clip, got = parse_file_name(file_name)
    assert (str(clip), got) == ("S001C001P001R001A058", kind)


@pytest.mark.parametrize(
    "name, message",
    [
        ("S001C001P001R001A58", "expected SsssCcccPpppRrrrAaaa"),
        ("S001C004P001R001A058", "camera C004"),
        ("S001C001P001R003A058", "replication R003"),
        ("S001C001P001R001A121", "action A121"),
        ("S000C001P001R001A058", "start at 1"),
    ],
)
def test_malformed_clip_names_say_what_is_wrong(name, message):
    with pytest.raises(ClipNameError, match=message):
        parse_clip_name(name)


def test_malformed_file_name():
    with pytest.raises(ClipNameError, match="not an NTU file name"):
        parse_file_name("S001C001P001R001A058_depth.png")


def test_relation_table_has_the_26_mutual_actions():
    ids = sorted(NTU_MUTUAL_RELATIONS)
    assert len(ids) == 26
    assert ids == [f"A{a:03d}" for a in [*range(50, 61), *range(106, 121)]]
    assert NTU_MUTUAL_RELATIONS["A058"].name == "handshaking"
    assert NTU_MUTUAL_RELATIONS["A058"].caption == "A person is shaking hands with a person."
    assert all(r.caption.startswith("A person") and r.caption.endswith(".") for r in NTU_MUTUAL_RELATIONS.values())


def test_relation_ids_normalize():
    assert [normalize_relation_id(v) for v in ("58", 58, "a58", "A058", "dance")] == ["A058"] * 4 + ["dance"]


def test_unknown_relation_lists_known_ones():
    with pytest.raises(RelationError, match=r"unknown relation 'A001'.*A050"):
        get_relation("A001")


def test_user_relations_add_and_override(tmp_path):
    yaml_file = tmp_path / "rel.yaml"
    yaml_file.write_text(
        "- {id: A058, caption: A person shakes hands with a person.}\n"
        "- {id: waltz, name: waltzing, caption: A person is waltzing with a person.}\n"
    )
    table = load_relation_table(yaml_file)
    assert table["A058"].caption == "A person shakes hands with a person."
    assert table["A058"].name == "handshaking"
    assert get_relation("waltz", table).name == "waltzing"
    csv_file = tmp_path / "rel.csv"
    csv_file.write_text("id,name,caption\n112,,A person high-fives a person.\n")
    assert load_relation_table(csv_file)["A112"].caption == "A person high-fives a person."


def test_bad_relation_files(tmp_path):
    bad = tmp_path / "rel.yaml"
    bad.write_text("- {id: newone}\n")
    with pytest.raises(RelationError, match="row 1 \\(newone\\): a new relation needs a 'caption'"):
        load_relation_table(bad)
    with pytest.raises(RelationError, match="does not exist"):
        load_relation_table(tmp_path / "missing.yaml")
    (tmp_path / "rel.txt").write_text("x")
    with pytest.raises(RelationError, match="use a .yaml"):
        load_relation_table(tmp_path / "rel.txt")
