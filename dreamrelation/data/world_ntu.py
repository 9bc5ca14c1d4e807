"""The toy world's clips as an NTU RGB+D dataset (issue 22 §2): the data of the toy-base demo.

The synthetic generator (`data/synthetic.py`, `SyntheticConfig.style="world"`) calls
`render_world_ntu_clip` for each clip name instead of drawing its 3-D puppets. The clip is a
world clip (`data/world.py`): two stick-figure people, the actor dark and the other light, on
a world background, doing the world relation that the NTU action id names. So the toy base,
trained on world clips, sees the demo's exemplars in its own visual language, and the toy judge
can score what the demo generates.

The `.skeleton` files are made from the figures' own joints (`world.person_joints`, the points
the figure is drawn from): 25 Kinect v2 joints per body whose `colorX`/`colorY` lie on the drawn
strokes, camera coordinates from a pinhole camera at the world's frame size, and NTU's other
columns as the puppet generator writes them. Masks are the world's modal masks.

Plain numpy; no model code, no Prefect.
"""

from __future__ import annotations

import numpy as np

from dreamrelation.data.ntu import ClipName
from dreamrelation.data.skeleton import COLOR_FOCAL_PER_WIDTH, KINECT_ID_BASE, NUM_JOINTS, Body, kinect_body
from dreamrelation.data.world import (
    KINDS, PALETTE, ClipSpec, SubjectSpec, WorldClip, WorldConfig, caption, glyph_to_pixels, person_joints,
    render_clip, sample_specs,
)

#: The world relations under the NTU action ids that name them (issue 22 §2).
WORLD_ACTIONS: dict[str, str] = {
    "A052": "push",  # pushing other person
    "A055": "hug",  # hugging other person
    "A058": "shake_hands",  # handshaking
    "A059": "approach",  # walking towards each other
    "A060": "apart",  # walking apart from each other
    "A116": "follow",  # follow other person
}

# Each Kinect joint as a point of the stick figure: (from, to, fraction of the way).
_ARM = (("shoulder", 0.0), ("elbow", 0.5), ("wrist", 0.9), ("hand", 1.0), ("tip", 1.0), ("thumb", 1.0))
_LEG = (("hip", 0.0), ("knee", 0.5), ("ankle", 0.92), ("foot", 1.0))
_KINECT = {  # Kinect v2 joint indices, per side
    "left": {"shoulder": 4, "elbow": 5, "wrist": 6, "hand": 7, "tip": 21, "thumb": 22,
             "hip": 12, "knee": 13, "ankle": 14, "foot": 15},
    "right": {"shoulder": 8, "elbow": 9, "wrist": 10, "hand": 11, "tip": 23, "thumb": 24,
              "hip": 16, "knee": 17, "ankle": 18, "foot": 19},
}
_DEPTH_M = (3.0, 3.3)  # metres from the camera of the actor and the other figure


def kinect_joints(swing: float) -> np.ndarray:
    """(25, 2) glyph-unit positions of the Kinect v2 joints on the world's stick figure."""
    p = {name: np.array(xy) for name, xy in person_joints(swing).items()}
    out = np.zeros((NUM_JOINTS, 2))
    out[0], out[2], out[3], out[20] = p["pelvis"], p["neck"], p["head"], p["shoulders"]  # spine base, neck, head
    out[1] = 0.5 * (p["shoulders"] + p["pelvis"])  # spine mid
    for side, index in _KINECT.items():
        for joint, f in _ARM:
            out[index[joint]] = p["shoulders"] + f * (p[f"{side}_hand"] - p["shoulders"])
        for joint, f in _LEG:
            out[index[joint]] = p["pelvis"] + f * (p[f"{side}_foot"] - p["pelvis"])
    return out


def world_spec(clip: ClipName, seed: int, world: WorldConfig) -> ClipSpec:
    """The world clip an NTU clip name shows: its action's relation, a dark actor and a light other person."""
    if clip.relation not in WORLD_ACTIONS:
        raise ValueError(f"{clip.relation} has no toy-world relation; world clips exist for {', '.join(WORLD_ACTIONS)}")
    rng = np.random.default_rng([seed, clip.setup, clip.camera, clip.performer, clip.replication, clip.action, 22])
    subjects = tuple(
        SubjectSpec(kind="person", contrast=contrast, colour=str(rng.choice(list(PALETTE))),
                    size=float(np.round(rng.uniform(*world.size_range), 4)))
        for contrast in ("dark", "light")
    )
    return ClipSpec(relation=WORLD_ACTIONS[clip.relation], subjects=subjects, seed=int(rng.integers(2**31 - 1)))


def skeleton_frames(rendered: WorldClip, body_ids: np.ndarray, bodies: int, seed: int) -> list[list[Body]]:
    """Per frame, the figures' bodies (actor first); with `bodies=1` the other is lost after a quarter."""
    frames, height, width = rendered.video.shape[:3]
    focal = COLOR_FOCAL_PER_WIDTH * min(width, height * 16 / 9)
    rng = np.random.default_rng([seed, 2201])
    keep_second = max(1, frames // 4) if bodies == 1 else frames
    out: list[list[Body]] = []
    for k in range(frames):
        frame: list[Body] = []
        for i in range(2 if k < keep_second else 1):
            facing = int(rendered.facing[k, i])
            pixels = glyph_to_pixels("person", kinect_joints(float(rendered.swing[k, i])),
                                     rendered.trajectories[k, i], float(rendered.sizes[i]), facing)
            z = np.full(NUM_JOINTS, _DEPTH_M[i])
            xyz = np.column_stack([(pixels[:, 0] - width / 2) * z / focal, (height / 2 - pixels[:, 1]) * z / focal, z])
            frame.append(kinect_body(int(body_ids[i]), xyz, pixels, facing, 0.0, rng))
        out.append(frame)
    return out


def render_world_ntu_clip(
    clip: ClipName, *, frames: int, width: int, height: int, seed: int, bodies: int
) -> tuple[np.ndarray, np.ndarray, list[list[Body]], np.ndarray]:
    """(video (T,H,W,3) uint8, masks (T,2,H,W) bool, skeleton frames, body ids (2,)) of one clip name."""
    world = WorldConfig(frames=frames, height=height, width=width)
    rendered = render_clip(world_spec(clip, seed, world), world)
    rng = np.random.default_rng([seed, clip.action, clip.setup, clip.camera, clip.performer, clip.replication])
    ids = KINECT_ID_BASE + rng.choice(100000, size=2, replace=False)
    return rendered.video, rendered.masks, skeleton_frames(rendered, ids, bodies, seed), ids


def exemplar_caption(action: str) -> str:
    """The caption of every clip of a world action, as NTU's say 'person': 'A dark person is pushing a light person.'."""
    person = SubjectSpec(kind="person", contrast="dark", colour="red", size=0.3)
    spec = ClipSpec(relation=WORLD_ACTIONS[action], subjects=(person, person.model_copy(update={"contrast": "light"})), seed=0)
    return caption(spec, WorldConfig(caption_colour=False))


def demo_prompts(actions: list[str], per_action: int, seed: int) -> dict[str, list[str]]:
    """Held-out world prompts per action: the action's relation between two subjects that are not people."""
    others = [kind for kind in KINDS if kind != "person"]
    world = WorldConfig()
    return {
        action: [caption(s, world) for s in sample_specs(world, per_action, [WORLD_ACTIONS[action]], others, seed)]
        for action in actions
    }
