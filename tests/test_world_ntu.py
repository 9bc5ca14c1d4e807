"""World clips in NTU RGB+D format (issue 22 §2): the toy-base demo's dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dreamrelation.config import CONFIG_DIR, ConfigError, load_config
from dreamrelation.data.masks import skeleton_track_boxes
from dreamrelation.data.ntu import parse_file_name
from dreamrelation.data.skeleton import COLOR_X, COLOR_Y, read_skeleton
from dreamrelation.data.synthetic import SyntheticConfig, generate_dataset
from dreamrelation.data.video import VideoConfig, read_video
from dreamrelation.data.world import parse_caption
from dreamrelation.model.config import PretrainConfig
from dreamrelation.data.world_ntu import WORLD_ACTIONS, demo_prompts, exemplar_caption
from dreamrelation.perception.judge import judge_video

WORLD = dict(style="world", frames=25, height=64, width=96)


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world-ntu")
    config = SyntheticConfig(relations=["A052", "A059", "A116"], clips_per_relation=3, single_body=1, **WORLD)
    generate_dataset(root, config)
    return root


def _clips(root: Path, action: str) -> list[Path]:
    return sorted((root / "nturgb+d_skeletons").glob(f"*{action}.skeleton"))


def test_skeleton_joints_lie_on_the_drawn_figures(world_root: Path) -> None:
    for action in ("A052", "A059", "A116"):
        for skeleton_path in _clips(world_root, action):
            masks = np.load(world_root / "masks" / f"{skeleton_path.stem}_masks.npz")["masks"]
            assert masks.shape == (25, 2, 64, 96)
            sequence = read_skeleton(skeleton_path)
            for k, frame in enumerate(sequence.frames):
                for i, body in enumerate(frame):  # the actor's body first, as subject 0's mask
                    x = np.clip(np.round(body.joints[:, COLOR_X]).astype(int), 0, 95)
                    y = np.clip(np.round(body.joints[:, COLOR_Y]).astype(int), 0, 63)
                    on_own = masks[k, i][y, x] | masks[k, 1 - i][y, x]  # a joint may be hidden by the other figure
                    assert on_own.all(), (skeleton_path.name, k, i)


def test_clip_names_relations_and_the_single_body_fault(world_root: Path) -> None:
    videos = sorted((world_root / "nturgb+d_rgb").glob("*_rgb.avi"))
    assert len(videos) == 3 * 4
    for video in videos:
        name, _ = parse_file_name(video.name)
        assert name.relation in ("A052", "A059", "A116")
    counts = sorted(max(len(f) for f in read_skeleton(p).frames[6:]) for p in _clips(world_root, "A052"))
    assert counts == [1, 2, 2, 2]  # the single_body clip loses the second figure after a quarter


def test_the_judge_reads_the_written_videos_as_their_actions_relation(world_root: Path) -> None:
    for action in ("A052", "A059", "A116"):
        for video in sorted((world_root / "nturgb+d_rgb").glob(f"*{action}_rgb.avi")):
            frames, fps = read_video(video)
            assert frames.shape == (25, 64, 96, 3) and fps == pytest.approx(30.0)
            assert judge_video(frames).relation == WORLD_ACTIONS[action], video.name


def test_skeleton_boxes_sit_on_the_figures(world_root: Path) -> None:
    """The skeleton-box backend's boxes are centred on each drawn figure (the stick figure's head
    disc and stroke width reach past the joints, so the box is a little smaller than the figure)."""
    video = VideoConfig(num_frames=25, height=64, width=96, fps=30.0, aspect=1.5)
    checked = 0
    for skeleton_path in _clips(world_root, "A059"):
        drawn = np.load(world_root / "masks" / f"{skeleton_path.stem}_masks.npz")["masks"]
        boxes, _ = skeleton_track_boxes(read_skeleton(skeleton_path), 30.0, 64, 96, video)
        for k in range(0, 25, 6):
            for i in range(2):
                ys, xs = np.nonzero(drawn[k, i])
                if len(xs) < 20 or np.isnan(boxes[k, i]).any():  # hidden, or a body the skeleton lost
                    continue
                checked += 1
                x0, y0, x1, y1 = boxes[k, i]
                assert abs((x0 + x1) / 2 - xs.mean()) < 3 and abs((y0 + y1) / 2 - ys.mean()) < 4, (skeleton_path.name, k, i)
                inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
                assert inside.mean() > 0.6, (skeleton_path.name, k, i)
    assert checked >= 20


def test_world_style_refuses_actions_and_formats_it_cannot_draw() -> None:
    with pytest.raises(ValueError, match=r"style 'world' has no clips of A050; its actions are A052 \(push\)"):
        SyntheticConfig(relations=["A050"], **WORLD)
    with pytest.raises(ValueError, match=r"frames = 6k\+1 .* got 40 frames at 64x96"):
        SyntheticConfig(relations=["A052"], **{**WORLD, "frames": 40})


def test_the_puppet_style_keeps_its_keys() -> None:
    assert "style" not in SyntheticConfig().key_dump()
    assert SyntheticConfig(relations=["A052"], **WORLD).key_dump()["style"] == "world"


def test_the_world_demo_files_are_what_the_code_makes() -> None:
    relations = yaml.safe_load((CONFIG_DIR / "world-demo/relations.yaml").read_text())
    assert relations == {action: {"caption": exemplar_caption(action)} for action in WORLD_ACTIONS}
    assert relations["A052"]["caption"] == "A dark person is pushing a light person."
    prompts = yaml.safe_load((CONFIG_DIR / "world-demo/prompts.yaml").read_text())
    assert prompts == demo_prompts(list(WORLD_ACTIONS), 12, 22)
    for action, texts in prompts.items():
        for text in texts:
            relation, subjects = parse_caption(text)
            assert relation == WORLD_ACTIONS[action] and "person" not in {s.kind for s in subjects}


def test_the_world_demo_preset_loads_and_targets_an_unseen_relation() -> None:
    config = load_config("world-demo")
    assert config.synthetic.style == "world" and config.synthetic.relations == ["A052"]
    assert WORLD_ACTIONS["A052"] in PretrainConfig().held_out_relations  # the shipped base never saw it
    assert config.evaluate.relation_judge == "toy"
    assert [m.source for m in config.evaluate.methods] == ["relation_lora", "trained", "base"]
    direct = config.method_train(config.trained_methods[0])
    assert direct.lora.mode == "direct" and not direct.hmt and not direct.rcl and direct.steps == config.train.steps
    with pytest.raises(ConfigError, match=r"evaluate.methods\[0\] \(X\).train: unknown key 'lr_typo'; did you mean 'lr'"):
        load_config("world-demo", ["evaluate.methods=[{name: X, source: trained, train: {lr_typo: 1}}]"])
