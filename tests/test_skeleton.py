import io

import numpy as np
import pytest

from dreamrelation.data.skeleton import Body, SkeletonFormatError, format_skeleton, parse_skeleton, read_skeleton


def _body(body_id: int, x0: float, tracking: int = 2) -> Body:
    joints = np.zeros((25, 12))
    joints[:, 5] = x0 + np.arange(25)  # colorX
    joints[:, 6] = 100 + np.arange(25)  # colorY
    joints[:, 11] = tracking
    joints[3, 11] = 0  # one untracked joint (the head)
    info = np.array([body_id, 0, 1, 1, 1, 1, 0, 0.1, -0.2, 2], dtype=float)
    return Body(body_id, info, joints)


def test_round_trip_with_0_to_3_bodies(tmp_path):
    frames = [[], [_body(7, 10.0)], [_body(7, 11.0), _body(72057594037931101, 500.0)],
              [_body(7, 12.0), _body(72057594037931101, 501.0), _body(9, 900.0)]]
    path = tmp_path / "S001C001P001R001A058.skeleton"
    path.write_text(format_skeleton(frames))
    seq = read_skeleton(path)
    assert seq.num_frames == 4
    assert seq.bodies_per_frame().tolist() == [0, 1, 2, 3]
    assert seq.frames[2][1].body_id == 72057594037931101
    np.testing.assert_allclose(seq.frames[3][2].color_xy[:, 0], 900.0 + np.arange(25))
    assert seq.frames[1][0].tracked.sum() == 24  # the untracked head is not counted
    assert seq.tracked_bodies_per_frame(min_joints=20).tolist() == [0, 1, 2, 3]
    assert seq.body_ids() == [7, 72057594037931101, 9]
    xy, tracked = seq.track(72057594037931101)
    assert np.isnan(xy[:2]).all() and not tracked[:2].any()
    assert xy[2, 0, 0] == 500.0


def test_real_layout_values_parse():
    text = (
        "1\n1\n"
        "72057594037931101 0 1 1 1 1 0 0.02 -0.25 2\n25\n"
        + "".join("0.2186 0.1722 3.785 277.1 191.0 1036.1 519.4 -0.24 0.02 0.97 -0.06 2\n" for _ in range(25))
    )
    seq = parse_skeleton(io.StringIO(text), "x.skeleton")
    assert seq.frames[0][0].color_xy[0].tolist() == [1036.1, 519.4]


def test_truncated_file_names_file_and_line(tmp_path):
    text = format_skeleton([[_body(1, 0.0)], [_body(1, 0.0)]])
    lines = text.splitlines()
    path = tmp_path / "cut.skeleton"
    path.write_text("\n".join(lines[:40]) + "\n")  # ends inside the second frame
    with pytest.raises(SkeletonFormatError, match=r"cut\.skeleton: file ends after line 40.*truncated"):
        read_skeleton(path)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines.__setitem__(4, "1 2 3"), r"line 5: expected 12 value\(s\) for joint"),
        (lambda lines: lines.__setitem__(3, "24"), r"line 4: joint count 24, expected 25"),
        (lambda lines: lines.__setitem__(1, "5"), r"line 2: frame 1 has 5 bodies"),
        (lambda lines: lines.__setitem__(0, "two"), r"line 1: expected an integer frame count"),
        (lambda lines: lines.__setitem__(5, "a " * 12), r"line 6: non-numeric value in joint"),
    ],
)
def test_malformed_lines(mutate, message):
    lines = format_skeleton([[_body(1, 0.0)]]).splitlines()
    mutate(lines)
    with pytest.raises(SkeletonFormatError, match=message):
        parse_skeleton(io.StringIO("\n".join(lines)), "bad.skeleton")


# -- the fast reader: same arrays and same errors as the reference, on every fixture -------------
from dreamrelation.data.skeleton import TRACKED, _parse_fast, parse_skeleton_bytes  # noqa: E402


def _reference(data: bytes, name: str = "f.skeleton"):
    return parse_skeleton(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"), name)


def _outcome(read):
    """What a reader makes of a file, bit for bit: the arrays' bytes, or the error's type and message."""
    try:
        seq = read()
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("error", type(exc).__name__, str(exc))
    frames = [
        [(b.body_id, b.info.dtype.str, b.info.shape, b.info.tobytes(), b.joints.dtype.str, b.joints.shape,
          b.joints.tobytes()) for b in bodies]
        for bodies in seq.frames
    ]
    return ("ok", seq.path, frames)


def _assert_same(data: bytes, name: str = "f.skeleton"):
    fast = _outcome(lambda: parse_skeleton_bytes(data, name))
    assert fast == _outcome(lambda: _reference(data, name))
    return fast


def _realistic(frames: int = 103, bodies: int = 2, seed: int = 0) -> bytes:
    """A Kinect-like file: 7-significant-digit values of every magnitude (exponents included)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        frame = []
        for k in range(bodies):
            joints = np.empty((25, 12))
            joints[:, :3] = rng.normal(0, 1, (25, 3)) * 10.0 ** rng.integers(-6, 2, (25, 3))
            joints[:, 3:5] = rng.uniform(0, 512, (25, 2))
            joints[:, 5:7] = rng.uniform(-50, 1950, (25, 2))
            joints[:, 7:11] = rng.normal(0, 0.5, (25, 4))
            joints[:, 11] = rng.choice([0, 1, 2], 25, p=[0.05, 0.15, 0.8])
            info = np.array([72057594037931101 + k, 0, 1, 1, 1, 0, 0, -0.0171, 0.2434, 2])
            frame.append(Body(72057594037931101 + k, info, joints))
        out.append(frame)
    return format_skeleton(out).encode()


def test_fast_reader_matches_reference_on_realistic_files():
    data = _realistic()
    assert 500_000 < len(data) < 700_000  # the size of a 103-frame two-body NTU file
    result = _assert_same(data)
    assert result[0] == "ok" and len(result[2]) == 103 and {len(f) for f in result[2]} == {2}
    _assert_same(data.replace(b"\n", b"\r\n"))  # NTU's own files end lines with CRLF
    _assert_same(data + b"trailing junk the reference never reads\n")
    for bodies in (0, 1, 3, 4):
        _assert_same(_realistic(frames=5, bodies=bodies, seed=bodies))
    _assert_same(b"0\n")  # no frames


def test_fast_reader_matches_reference_on_the_synthetic_dataset(synthetic_root):
    files = sorted(synthetic_root.rglob("*.skeleton"))
    assert len(files) >= 12
    for path in files:
        data = path.read_bytes()
        assert _assert_same(data, str(path))[0] == "ok"
        assert _parse_fast(data, str(path)) is not None  # answered by the fast path, not the fallback
        assert _outcome(lambda: read_skeleton(path)) == _outcome(lambda: _reference(data, str(path)))


@pytest.mark.parametrize(
    "text",
    [
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "+1 .5 5. 1E5 -0 1e-07 2 3 4 5 6 2\n" * 25,  # float() spellings
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "  1 2  3 4 5 6 7 8 9 10 11 2  \n" * 25,  # extra spaces
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1\t2 3 4 5 6 7 8 9 10 11 2\n" * 25,  # tabs
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1\x1f2 3 4 5 6 7 8 9 10 11 2\n" * 25,  # other whitespace
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6\x0c7 8 9 10 11 2\n" * 25,  # a str-only line break
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\x00\n" * 25,  # NUL
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 Infinity\n" * 25,
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 1_0\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 25,  # float() takes 1_0
        "1\n\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n\n" * 25,  # blank lines
        "1\r1\r7 0 1 1 1 1 0 0.1 -0.2 2\r25\r" + "1 2 3 4 5 6 7 8 9 10 11 2\r" * 25,  # old Mac line ends
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 nan\n" * 25,  # nan: reference accepts
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 1_0\n" * 25,  # float() accepts 1_0
        "-2\n",  # a negative frame count reads as no frames
        "1\n1\n1.5 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 25,  # body id not an int
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 25,  # 9 info values
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 24 + "1 2 3 4 5 6 7 8 9 10 11\n",
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2 \n" * 12 + "1 2 3 4 5 6 7 8 9 1-0 11 2\n",
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 24 + "1 2 3 4 5 6 7 8 9 10 11 2 3\n",
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 24 + "1 2 3 4 5 6 7 8 9 10 e 2\n",
        "1\n1\n7 0 1 1 1 1 0 0.1 -0.2 2\n+25\n" + "1 2 3 4 5 6 7 8 9 10 11 2\n" * 25,
        "",
    ],
)
def test_fast_reader_matches_reference_on_odd_and_malformed_text(text):
    _assert_same(text.encode())


def test_fast_reader_matches_reference_on_every_truncation_and_line_mutation():
    lines = format_skeleton([[_body(1, 0.0), _body(2, 50.0)], [], [_body(1, 3.0)]]).splitlines(keepends=True)
    for cut in range(len(lines)):
        result = _assert_same("".join(lines[:cut]).encode(), "cut.skeleton")
        assert result[0] == "error" and "truncated" in result[2]
    for mutate, message in [
        (lambda ls, i: ls.__setitem__(i, "1 2 3\n"), None),
        (lambda ls, i: ls.__setitem__(i, "x\n"), None),
        (lambda ls, i: ls.__setitem__(i, "5\n"), None),
        (lambda ls, i: ls.__setitem__(i, ls[i].replace("1", "\u00e9", 1)), None),  # non-ASCII but valid UTF-8
        (lambda ls, i: ls.insert(i, "   \n"), None),
    ]:
        for i in range(len(lines)):
            mutated = list(lines)
            mutate(mutated, i)
            _assert_same("".join(mutated).encode(), "bad.skeleton")
    _assert_same("".join(lines).encode()[:-7] + b"\xff\xfe" + b"\n", "latin.skeleton")  # not UTF-8


def test_fast_reader_matches_reference_on_random_byte_mutations():
    data = format_skeleton([[_body(1, 0.0), _body(2, 50.0)], [_body(1, 3.0)]]).encode()
    rng = np.random.default_rng(15)
    alphabet = b"0123456789.-+eE \n\r\t\x0b\x0c\x1c\x1fxna_\x00\xff"
    errors = 0
    for _ in range(600):
        mutated = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(mutated)))
            op = rng.integers(0, 3)
            if op == 0:
                mutated[at] = alphabet[int(rng.integers(0, len(alphabet)))]
            elif op == 1:
                del mutated[at]
            else:
                mutated.insert(at, alphabet[int(rng.integers(0, len(alphabet)))])
        errors += _assert_same(bytes(mutated))[0] == "error"
    assert 50 < errors < 550  # both kinds of outcome were compared


def test_fast_path_is_taken_and_the_reference_only_decides_odd_files(monkeypatch):
    import dreamrelation.data.skeleton as skeleton

    expected = _outcome(lambda: _reference(_realistic(frames=3)))

    def refuse(*args, **kwargs):
        raise AssertionError("the reference reader was used")

    monkeypatch.setattr(skeleton, "parse_skeleton", refuse)
    assert _outcome(lambda: parse_skeleton_bytes(_realistic(frames=3), "f.skeleton")) == expected
    with pytest.raises(AssertionError, match="reference reader was used"):
        parse_skeleton_bytes(b"1\n1\n", "cut.skeleton")


def test_body_statistics_match_a_per_joint_count():
    seq = parse_skeleton_bytes(_realistic(frames=20, bodies=3, seed=4), "s.skeleton")
    for min_joints in (1, 10, 20, 25):
        loop = [sum(int((b.joints[:, 11] == TRACKED).sum()) >= min_joints for b in bodies) for bodies in seq.frames]
        assert seq.tracked_bodies_per_frame(min_joints).tolist() == loop
    for width, height in ((1920, 1080), (960, 540), (320, 180)):
        points = [b.joints[j, 5:7] for bodies in seq.frames for b in bodies for j in range(25) if b.joints[j, 11] == 2]
        outside = [x < -0.1 * width or x > 1.1 * width or y < -0.1 * height or y > 1.1 * height for x, y in points]
        assert seq.fraction_outside(width, height) == pytest.approx(sum(outside) / len(outside), abs=1e-15)
    empty = parse_skeleton_bytes(b"2\n0\n0\n", "e.skeleton")
    assert empty.tracked_bodies_per_frame().tolist() == [0, 0] and empty.fraction_outside(10, 10) == 0.0
