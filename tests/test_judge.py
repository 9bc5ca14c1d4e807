"""The toy-world relation judge (issue 13 §3): accuracy on a fixed held-out set, reports, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dreamrelation.data.world import RELATIONS, WorldConfig, degrade_video, parse_caption, render_clip, sample_specs
from dreamrelation.perception import judge as judge_module
from dreamrelation.perception.judge import (
    JUDGE_VERSION,
    JudgeInputError,
    Judgement,
    SubjectTrack,
    appearance_leakage,
    confusion_matrix,
    default_params,
    fit_judge,
    format_confusion,
    judge_video,
    load_params,
    relation_accuracy,
    subject_fidelity,
)

CONFIG = WorldConfig()


@pytest.fixture(scope="module")
def held_out():
    """Four clips per relation from a seed the shipped parameters were not fitted on."""
    params = default_params()
    fitted = {s.seed for s in sample_specs(CONFIG, params.fit["clips_per_relation"] * len(RELATIONS),
                                           seed=params.fit["seed"])}
    specs = sample_specs(CONFIG, 4 * len(RELATIONS), seed=1234)
    assert not fitted & {s.seed for s in specs}
    return [render_clip(spec, CONFIG) for spec in specs]


def _kind_accuracy(clips, judgements) -> float:
    hits = [next((s.kind == x.kind for s in j.subjects if s.contrast == x.contrast), False)
            for c, j in zip(clips, judgements) for x in c.spec.subjects]
    return float(np.mean(hits))


@pytest.mark.parametrize("degraded", [False, True], ids=["clean", "degraded"])
def test_judge_accuracy_on_held_out_clips(held_out, degraded):
    videos = [degrade_video(c.video, c.spec.seed) if degraded else c.video for c in held_out]
    judgements = [judge_video(v) for v in videos]
    truth = [c.spec.relation for c in held_out]
    labels = list(RELATIONS)
    matrix = confusion_matrix(truth, [j.relation for j in judgements], labels)
    assert relation_accuracy(judgements, truth) >= 0.9, format_confusion(matrix, labels)
    assert _kind_accuracy(held_out, judgements) >= 0.9
    assert np.mean([subject_fidelity(j, c.spec.subjects) for c, j in zip(held_out, judgements)]) >= 0.9
    assert not any(appearance_leakage(j, c.spec.subjects) for c, j in zip(held_out, judgements))


def test_judgement_contents(held_out):
    clip = held_out[0]
    judgement = judge_video(clip.video)
    assert set(judgement.relation_scores) == set(RELATIONS)
    assert abs(sum(judgement.relation_scores.values()) - 1) < 1e-6 and 0 < judgement.confidence <= 1
    assert [s.contrast for s in judgement.subjects] == ["dark", "light"]
    for subject in judgement.subjects:
        truth = next(i for i, x in enumerate(clip.spec.subjects) if x.contrast == subject.contrast)
        assert subject.track.shape == (CONFIG.frames, 2) and subject.found == 1.0
        assert np.abs(subject.track - clip.trajectories[:, truth]).max() < 0.3 * subject.size + 1
        assert subject.colour == clip.spec.subjects[truth].colour  # clean frames: colour is exact
    # Float frames in [0, 1] read the same as uint8.
    assert judge_video(clip.video / 255.0).relation == judgement.relation


def test_no_subjects_and_shared_contrast():
    empty = np.full((13, 64, 96, 3), 128, np.uint8)
    judgement = judge_video(empty)
    assert judgement.relation is None and judgement.subjects == () and judgement.confidence == 0
    # A generation that lost the contrast: both subjects drawn dark. Both are still found and tracked.
    spec = sample_specs(CONFIG, 1, relations=["apart"], kinds=["square"], seed=5)[0]
    clip = render_clip(spec, CONFIG)
    video = clip.video.copy()
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((3, 3))) for m in clip.masks.any(axis=1)])
    video[near > 0] = (90, 60, 40)  # the anti-aliased rims too
    judgement = judge_video(video)
    assert [s.contrast for s in judgement.subjects] == ["dark", "dark"]
    assert judgement.relation == "apart"
    assert not subject_fidelity(judgement, spec.subjects)  # the prompt asked for one light subject


def _judged(*kinds_and_contrasts: tuple[str, str]) -> Judgement:
    subjects = tuple(SubjectTrack(contrast=c, kind=k, kind_scores={}, colour="red", rgb=(0.0, 0.0, 0.0),
                                  track=np.zeros((3, 2)), found=1.0, size=10.0) for k, c in kinds_and_contrasts)
    return Judgement("push", {"push": 1.0}, subjects, 1.0)


def test_fidelity_and_leakage_reports():
    _, prompted = parse_caption("A dark red triangle is pushing a light blue circle.")
    assert subject_fidelity(_judged(("circle", "light"), ("triangle", "dark")), prompted)  # either order
    assert not subject_fidelity(_judged(("circle", "dark"), ("triangle", "light")), prompted)
    assert subject_fidelity(_judged(("circle", "dark"), ("triangle", "light")), prompted, attributes=("kind",))
    assert not subject_fidelity(_judged(("triangle", "dark"),), prompted)  # one subject missing
    _, unspecified = parse_caption("A triangle is pushing a circle.")  # contrast left open
    assert subject_fidelity(_judged(("circle", "dark"), ("triangle", "dark")), unspecified)
    assert appearance_leakage(_judged(("person", "dark"), ("circle", "light")), prompted)
    assert not appearance_leakage(_judged(("triangle", "dark"), ("circle", "light")), prompted)
    _, people = parse_caption("A dark red person is pushing a light blue circle.")
    assert not appearance_leakage(_judged(("person", "dark"), ("circle", "light")), people)
    assert relation_accuracy([_judged(), _judged()], ["push", "hug"]) == 0.5
    with pytest.raises(ValueError, match="2 judgements but 1"):
        relation_accuracy([_judged(), _judged()], ["push"])


def test_confusion_matrix_and_format():
    labels = ["approach", "push"]
    matrix = confusion_matrix(["approach", "push", "push"], ["approach", "approach", None], labels)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 1]]
    text = format_confusion(matrix, labels)
    assert text.splitlines()[0].split()[-3:] == ["approach", "push", "none"]
    assert text.splitlines()[2].split() == ["push", "1", "0", "1"]


@pytest.mark.parametrize(("frames", "message"), [
    (np.zeros((25, 3, 64, 96), np.uint8), "channels first"),
    (np.zeros((64, 96, 3), np.uint8), "\\(T, H, W, 3\\)"),
    (np.zeros((2, 64, 96, 3), np.uint8), "at least 4 frames"),
    (np.full((5, 64, 96, 3), np.nan, np.float32), "NaN"),
    (np.full((5, 64, 96, 3), 300.0), "\\[0, 1\\] or \\[0, 255\\]"),
    (np.zeros((5, 64, 96, 3), np.int16), "uint8 or float"),
])
def test_bad_input_is_a_clear_error(frames, message):
    with pytest.raises(JudgeInputError, match=message):
        judge_video(frames)


def test_parameters_are_current_and_regenerate_deterministically(tmp_path):
    params = load_params()
    assert params.version == JUDGE_VERSION and params.fit["config"] == CONFIG.key_dump()
    tiny = [fit_judge(CONFIG, clips_per_relation=1, seed=7, degraded=False) for _ in range(2)]
    assert tiny[0] == tiny[1]
    stale = tmp_path / "params.json"
    stale.write_text(params.model_copy(update={"version": JUDGE_VERSION + 1}).model_dump_json())
    with pytest.raises(ValueError, match="bench/judge.py --world 1 --write-params"):
        load_params(stale)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_params(tmp_path / "absent.json")
    assert judge_module.PARAMS_FILE.stat().st_size < 20_000  # small enough to commit
