"""Toy-world evaluation: reconstruct or generate world videos and score them with the judge.

Used by the toy base's gates (issue 13 §2), by the study (issue 13 §4) and by the `evaluate`
stage with `relation_judge: toy` (issue 13 §3, `judge_prompt`). Every score comes from
`perception.judge` on the videos themselves: the relation it recognises, whether both subjects
have the prompted kind and contrast (subject fidelity), and whether a subject looks like a
stick-figure person the prompt did not ask for (appearance leakage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffusers import AutoencoderKLMochi, MochiPipeline

from dreamrelation.data.world import ClipSpec, WorldClip, WorldConfig, caption, parse_caption
from dreamrelation.evaluation.config import JUDGE_METRICS
from dreamrelation.model.config import SampleConfig
from dreamrelation.model.pretrain import decode_clips, encode_clips
from dreamrelation.model.sample import generate
from dreamrelation.perception.judge import (
    Judgement,
    JudgeParams,
    PromptedSubject,
    appearance_leakage,
    judge_video,
    subject_fidelity,
)


@dataclass(frozen=True)
class JudgedVideo:
    """One judged video: what was asked, what the judge saw."""

    prompt: str
    relation: str  # prompted
    judged: str | None
    relation_ok: bool
    fidelity: bool  # both subjects with the prompted kind and contrast
    leakage: bool  # a 'person' the prompt did not ask for
    confidence: float


def compare(
    judgement: Judgement, relation: str, subjects: Sequence[PromptedSubject], prompt: str
) -> JudgedVideo:
    """Compare a judgement with the relation and the two subjects the video was asked to show."""
    return JudgedVideo(
        prompt=prompt,
        relation=relation,
        judged=judgement.relation,
        relation_ok=bool(judgement.relation == relation),
        fidelity=bool(subject_fidelity(judgement, subjects)),
        leakage=bool(appearance_leakage(judgement, subjects)),
        confidence=float(judgement.confidence),
    )


def score(judgement: Judgement, spec: ClipSpec, prompt: str) -> JudgedVideo:
    """Compare a judgement with the spec the video was asked to show."""
    return compare(judgement, spec.relation, spec.subjects, prompt)


def judge_prompt(frames: np.ndarray, prompt: str, params: JudgeParams | None = None) -> JudgedVideo:
    """Judge a video against its world-style prompt (issue 13 §3: the judge beside the VLM).

    The expected relation and subjects come from `parse_caption(prompt)`; a prompt that is not
    a world caption raises ValueError.
    """
    relation, subjects = parse_caption(prompt)
    return compare(judge_video(frames, params), relation, subjects, prompt)


def video_rates(video: JudgedVideo) -> dict[str, float]:
    """One judged video as 0/1 values of `JUDGE_METRICS` (what `summarize` averages)."""
    values = {"relation_accuracy": video.relation_ok, "subject_fidelity": video.fidelity,
              "appearance_leakage": video.leakage, "joint": video.relation_ok and video.fidelity}
    return {metric: float(values[metric]) for metric in JUDGE_METRICS}


def summarize(videos: Sequence[JudgedVideo]) -> dict[str, float]:
    """Rates over a set of judged videos (each in [0, 1]) and their count."""
    if not videos:
        raise ValueError("no judged videos to summarize")
    rates = [video_rates(v) for v in videos]
    return {**{metric: float(np.mean([r[metric] for r in rates])) for metric in JUDGE_METRICS}, "videos": len(videos)}


def judge_generations(
    pipe: MochiPipeline,
    specs: Sequence[ClipSpec],
    world: WorldConfig,
    sample: SampleConfig,
    keep: int = 0,
    on_video: Callable[[int, int], None] | None = None,
) -> tuple[list[JudgedVideo], list[np.ndarray]]:
    """Generate the caption of every spec (seed `sample.seed + i`) and judge it.

    Returns the judged videos and the frames of the first `keep` (for frame strips).
    """
    judged, kept = [], []
    for i, spec in enumerate(specs):
        prompt = caption(spec, world)
        frames = generate(pipe, prompt, sample.model_copy(update={"seed": sample.seed + i}))
        judged.append(score(judge_video(frames), spec, prompt))
        if i < keep:
            kept.append(frames)
        if on_video is not None:
            on_video(i + 1, len(specs))
    return judged, kept


@torch.no_grad()
def reconstruction_report(vae: AutoencoderKLMochi, clips: Sequence[WorldClip], batch: int = 8) -> dict[str, float]:
    """PSNR of VAE reconstructions of world clips, and the judge's scores on them (gate: >= 0.90)."""
    videos = np.stack([clip.video for clip in clips])
    recon_videos = decode_clips(vae, encode_clips(vae, videos, batch), batch)
    mse = float(np.mean((recon_videos.astype(np.float64) - videos.astype(np.float64)) ** 2))
    judged = [score(judge_video(v), c.spec, c.caption) for v, c in zip(recon_videos, clips)]
    return {"psnr_db": float(10 * np.log10(255.0**2 / max(mse, 1e-12))), **summarize(judged)}


def as_records(videos: Sequence[JudgedVideo]) -> list[dict]:
    """JSON-ready judged videos."""
    return [asdict(v) for v in videos]
