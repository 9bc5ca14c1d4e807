"""CLIP-T, temporal consistency, Fréchet distance and FVD (METHOD.md §6) on tiny inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrelation.perception import metrics
from dreamrelation.perception.config import FVDConfig


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> metrics.ClipEmbedder:
    folder = metrics.build_tiny_clip(tmp_path_factory.mktemp("clip"))
    return metrics.load_clip(folder, batch_size=3)


@pytest.fixture(scope="module")
def i3d(tmp_path_factory: pytest.TempPathFactory) -> metrics.I3DFeatureExtractor:
    path = metrics.build_tiny_i3d(tmp_path_factory.mktemp("i3d") / "i3d.pt")
    return metrics.load_i3d(path, batch_size=2)


def _video(seed: int, frames: int = 5, height: int = 40, width: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


# ---- CLIP-T and temporal consistency ------------------------------------------------------


def test_temporal_consistency_of_identical_frames_is_one(clip: metrics.ClipEmbedder) -> None:
    video = np.repeat(_video(0, frames=1), 6, axis=0)
    assert metrics.temporal_consistency(clip, video) == pytest.approx(1.0, abs=1e-6)


def test_temporal_consistency_from_embeddings_by_hand() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    # cos(e0, e1) = 0, cos(e1, e2) = 1/sqrt(2)
    assert metrics.temporal_consistency_from_embeddings(emb) == pytest.approx(0.5 / math.sqrt(2))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.temporal_consistency_from_embeddings(emb[:1])


def test_clip_t_from_embeddings_by_hand() -> None:
    # normalized frames [1,0] and [0,1]; their mean [0.5,0.5]; text [1,0] -> 0.5
    text = torch.tensor([2.0, 0.0])
    frames = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    assert metrics.clip_t_from_embeddings(text, frames) == pytest.approx(0.5)


def test_clip_t_matches_a_hand_computation_from_the_model(clip: metrics.ClipEmbedder) -> None:
    video = _video(1, frames=5)
    prompt = "A dog is shaking hands with a cat."
    with torch.no_grad():
        pixels = clip.processor(images=list(video), return_tensors="pt")["pixel_values"]
        image = clip.model.get_image_features(pixel_values=pixels).pooler_output.double().numpy()
        tokens = clip.processor(text=[prompt], return_tensors="pt")
        text = clip.model.get_text_features(**tokens).pooler_output[0].double().numpy()
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text)
    expected = float(np.mean(image @ text))
    expected_tc = float(np.mean(np.sum(image[1:] * image[:-1], axis=1)))
    assert metrics.clip_t(clip, video, prompt) == pytest.approx(expected, abs=1e-5)
    scores = metrics.clip_scores(clip, video, prompt)
    assert scores["clip_t"] == pytest.approx(expected, abs=1e-5)
    assert scores["temporal_consistency"] == pytest.approx(expected_tc, abs=1e-5)


def test_clip_embeddings_are_normalized_and_batched(clip: metrics.ClipEmbedder) -> None:
    emb = clip.image_embeddings(_video(2, frames=7))  # batch size 3 -> 3 chunks
    assert emb.shape == (7, 16)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(7), atol=1e-5)
    with pytest.raises(TypeError):
        clip.text_embeddings("a string, not a list")


def test_frames_are_validated(clip: metrics.ClipEmbedder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        metrics.clip_t(clip, _video(0).astype(np.float32), "A cat.")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        metrics.temporal_consistency(clip, _video(0)[..., :2].copy())


def test_load_clip_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        metrics.load_clip(tmp_path)


# ---- Fréchet distance -------------------------------------------------------------------


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    feats = np.random.default_rng(0).normal(size=(50, 6))
    assert metrics.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_set_is_the_squared_shift() -> None:
    feats = np.random.default_rng(1).normal(size=(40, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert metrics.frechet_distance(feats, feats + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_frechet_distance_of_diagonal_gaussians_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = 1.0 + 4.0 + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 5 + 1 + 1 + 4
    got = metrics.frechet_distance_from_statistics(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected) and expected == pytest.approx(11.0)


def test_frechet_distance_non_commuting_covariances_closed_form() -> None:
    # For 2x2 M with non-negative eigenvalues: Tr(sqrt(M)) = sqrt(Tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    product = s1 @ s2
    trace_sqrt = math.sqrt(np.trace(product) + 2 * math.sqrt(np.linalg.det(product)))
    mu1, mu2 = np.array([0.0, 0.0]), np.array([3.0, 4.0])
    expected = 25.0 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert metrics.frechet_distance_from_statistics(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_sampled_gaussians_approaches_closed_form() -> None:
    rng = np.random.default_rng(2)
    mu1, mu2 = np.zeros(3), np.array([2.0, 0.0, -1.0])
    a = np.diag([1.0, 2.0, 0.5])
    b = np.diag([2.0, 1.0, 0.5])
    x = rng.normal(size=(40000, 3)) @ a + mu1
    y = rng.normal(size=(40000, 3)) @ b + mu2
    # Covariances a^2 and b^2 (diagonal): closed form = ||mu1-mu2||^2 + sum (a_ii - b_ii)^2.
    expected = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=0.03)


def test_feature_statistics_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        metrics.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        metrics.feature_statistics(np.zeros(4))
    with pytest.raises(ValueError, match="equal length"):
        metrics.frechet_distance_from_statistics(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---- I3D / FVD ----------------------------------------------------------------------------


def test_select_frame_indices() -> None:
    assert metrics.select_frame_indices(20, 4, "first").tolist() == [0, 1, 2, 3]
    assert metrics.select_frame_indices(10, 4, "uniform").tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="has 8 frames but FVD uses 16"):
        metrics.select_frame_indices(8, 16)
    with pytest.raises(ValueError, match="unknown frame sampling"):
        metrics.select_frame_indices(20, 4, "random")  # type: ignore[arg-type]


def test_preprocess_for_i3d_maps_uint8_to_minus_one_one() -> None:
    video = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    video[:, :, :, 1] = 255
    x = metrics.preprocess_for_i3d(video, num_frames=16)
    assert x.shape == (3, 16, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], -1.0))
    assert torch.allclose(x[1], torch.full_like(x[1], 1.0))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.zeros(1, 3, 16, 224, 224, dtype=torch.uint8), "floating-point"),
        (torch.zeros(3, 16, 224, 224), r"\(B, 3, T, 224, 224\)"),
        (torch.zeros(1, 4, 16, 224, 224), r"\(B, 3, T, 224, 224\)"),
        (torch.zeros(1, 3, 16, 112, 112), "224x224 pixels, got 112x112"),
        (torch.zeros(1, 3, 9, 224, 224), "at least 10 frames, got 9"),
        (torch.full((1, 3, 16, 224, 224), 255.0), r"\[-1, 1\]"),
        (torch.full((1, 3, 16, 224, 224), float("nan")), "NaN"),
    ],
)
def test_i3d_input_contract_is_checked(x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.check_i3d_input(x)


def test_i3d_features_equal_the_module_output(i3d: metrics.I3DFeatureExtractor) -> None:
    videos = [_video(seed, frames=18, height=30, width=40) for seed in range(3)]
    feats = i3d.features(videos)  # batch size 2 -> batches of 2 and 1
    assert feats.shape == (3, 32) and feats.dtype == np.float64
    batch = torch.stack([metrics.preprocess_for_i3d(v) for v in videos])
    with torch.no_grad():
        direct = i3d.module(batch, rescale=False, resize=False, return_features=True).double().numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-5, atol=1e-6)


def test_fvd_of_identical_sets_is_zero_and_positive_otherwise(i3d: metrics.I3DFeatureExtractor) -> None:
    generated = [_video(seed, frames=16, height=24, width=24) for seed in range(4)]
    flat = [np.full((16, 24, 24, 3), 40 * k, dtype=np.uint8) for k in range(4)]
    assert metrics.fvd(i3d, generated, list(reversed(generated))) == pytest.approx(0.0, abs=1e-6)
    assert metrics.fvd(i3d, generated, flat) > 0.0


def test_fvd_rejects_short_videos_and_bad_settings(i3d: metrics.I3DFeatureExtractor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has 12 frames but FVD uses 16"):
        i3d.features([_video(0, frames=12)])
    with pytest.raises(ValueError, match="below the I3D minimum"):
        metrics.I3DFeatureExtractor(module=i3d.module, device=torch.device("cpu"), num_frames=8)
    with pytest.raises(ValueError, match="below min_frames"):
        FVDConfig(num_frames=8)
    with pytest.raises(FileNotFoundError, match="i3d_torchscript"):
        metrics.load_i3d(tmp_path / "nothing.pt")
