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
