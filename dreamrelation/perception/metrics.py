"""Video metrics of the evaluation (METHOD.md §6): CLIP-T, temporal consistency, FVD.

All functions take videos as uint8 numpy arrays of shape (T, H, W, 3) (RGB), exactly what the
sampling code decodes, so the `evaluate` stage can pass its generated frames directly.
Models are read from local paths only:

- CLIP: a transformers `CLIPModel` folder with its processor (ViT-B/32 in real use).
- I3D: a TorchScript file. The common Kinetics-400 I3D used for FVD (`i3d_torchscript.pt`)
  is called as ``i3d(x, rescale=False, resize=False, return_features=True)`` with ``x`` a
  float32 tensor (B, 3, T, 224, 224) with values in [-1, 1] and T >= 10 (its temporal
  pooling needs that many; 16 frames is the customary FVD clip) and returns (B, 400)
  features. `check_i3d_input` enforces this contract before every call.

The demo profile uses `build_tiny_clip` and `build_tiny_i3d`: tiny random models with the
same classes / call contract, saved to disk and read back through `load_clip` / `load_i3d`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: Spatial size the common I3D was trained on (METHOD.md §6, FVD).
I3D_SIZE = 224
#: Shortest clip the common I3D can pool over.
I3D_MIN_FRAMES = 10
#: Customary number of frames per FVD clip.
I3D_NUM_FRAMES = 16

FrameSampling = Literal["first", "uniform"]


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate a video as uint8 (T, H, W, 3) and return it; raise ValueError otherwise."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 in [0, 255], got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (T, H, W, 3), got {frames.shape}")
    if frames.shape[0] < 1:
        raise ValueError(f"{name} has no frames")
    return frames


# --------------------------------------------------------------------------------------------
# CLIP-T and temporal consistency
# --------------------------------------------------------------------------------------------


@dataclass
class ClipEmbedder:
    """A CLIP model and its processor; produces L2-normalized embeddings (METHOD.md §6)."""

    model: Any  # transformers.CLIPModel
    processor: Any  # transformers CLIPProcessor (tokenizer + image processor)
    device: torch.device
    batch_size: int = 32

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """(T, D) float32 CPU tensor of L2-normalized CLIP image embeddings, one per frame."""
        frames = check_frames(frames)
        chunks: list[torch.Tensor] = []
        for start in range(0, frames.shape[0], self.batch_size):
            images = [Image.fromarray(frame) for frame in frames[start : start + self.batch_size]]
            inputs = self.processor(images=images, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
            # transformers 5: get_image_features returns an output object; the projected
            # embedding is its pooler_output.
            out = self.model.get_image_features(pixel_values=pixel_values)
            chunks.append(_as_embedding(out).float().cpu())
        return F.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) float32 CPU tensor of L2-normalized CLIP text embeddings."""
        if isinstance(texts, str):
            raise TypeError("text_embeddings takes a sequence of strings, not one string")
        max_length = int(self.model.config.text_config.max_position_embeddings)
        inputs = self.processor(
            text=list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length
        )
        out = self.model.get_text_features(
            input_ids=inputs["input_ids"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
        )
        return F.normalize(_as_embedding(out).float().cpu(), dim=-1)


def _as_embedding(out: Any) -> torch.Tensor:
    """The projected embedding from a CLIP get_*_features result (tensor or output object)."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def load_clip(model_dir: str | Path, device: str = "cpu", batch_size: int = 32) -> ClipEmbedder:
    """Load a `CLIPModel` and its processor from a local folder (never downloads)."""
    from transformers import AutoProcessor, CLIPModel  # deferred: heavy, only where CLIP is used

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"CLIP folder {folder} has no config.json; expected a saved transformers CLIPModel "
            "with its processor files (e.g. a local copy of openai/clip-vit-base-patch32)"
        )
    torch_device = torch.device(device)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).to(torch_device).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    return ClipEmbedder(model=model, processor=processor, device=torch_device, batch_size=batch_size)


def clip_t_from_embeddings(text_embedding: torch.Tensor, frame_embeddings: torch.Tensor) -> float:
    """CLIP-T (METHOD.md §6): text embedding · mean of the L2-normalized frame embeddings.

    Both inputs are normalized here, so this equals the mean over frames of the cosine
    similarity between the prompt and each frame.
    """
    text = F.normalize(text_embedding.reshape(-1).double(), dim=0)
    frames = F.normalize(frame_embeddings.double(), dim=-1)
    return float(text @ frames.mean(dim=0))


def temporal_consistency_from_embeddings(frame_embeddings: torch.Tensor) -> float:
    """Temporal consistency (METHOD.md §6): mean cosine of consecutive frame embeddings."""
    if frame_embeddings.ndim != 2 or frame_embeddings.shape[0] < 2:
        raise ValueError(
            f"temporal consistency needs at least 2 frame embeddings (T, D), got {tuple(frame_embeddings.shape)}"
        )
    frames = F.normalize(frame_embeddings.double(), dim=-1)
    return float((frames[1:] * frames[:-1]).sum(dim=-1).mean())


def clip_t(clip: ClipEmbedder, frames: np.ndarray, prompt: str) -> float:
    """CLIP-T of one video against its prompt (METHOD.md §6)."""
    return clip_t_from_embeddings(clip.text_embeddings([prompt])[0], clip.image_embeddings(frames))


def temporal_consistency(clip: ClipEmbedder, frames: np.ndarray) -> float:
    """Temporal consistency of one video (METHOD.md §6)."""
    return temporal_consistency_from_embeddings(clip.image_embeddings(frames))


def clip_scores(clip: ClipEmbedder, frames: np.ndarray, prompt: str) -> dict[str, float]:
    """Both CLIP metrics of one video from a single pass over its frames."""
    frame_emb = clip.image_embeddings(frames)
    text_emb = clip.text_embeddings([prompt])[0]
    return {
        "clip_t": clip_t_from_embeddings(text_emb, frame_emb),
        "temporal_consistency": temporal_consistency_from_embeddings(frame_emb),
    }


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of features (N, D), N >= 2."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {feats.shape[0]}")
    if not np.isfinite(feats).all():
        raise ValueError("features contain NaN or inf")
    return feats.mean(axis=0), np.cov(feats, rowvar=False, ddof=1).reshape(feats.shape[1], feats.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance_from_statistics(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance of two Gaussians (METHOD.md §6, FVD).

    d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).
    S1 S2 has the same eigenvalues as the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), so the
    trace term is the sum of the square roots of that matrix's eigenvalues (no scipy, no
    complex parts). Round-off below zero is clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be 1-D of equal length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {s1.shape} and {s2.shape}")
    root1 = _sqrt_psd(s1)
    middle = root1 @ s2 @ root1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(eigvals, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between two feature sets (N1, D) and (N2, D)."""
    mu1, s1 = feature_statistics(features1)
    mu2, s2 = feature_statistics(features2)
    return frechet_distance_from_statistics(mu1, s1, mu2, s2)


# --------------------------------------------------------------------------------------------
# FVD with a TorchScript I3D
# --------------------------------------------------------------------------------------------


def select_frame_indices(total: int, num_frames: int, sampling: FrameSampling = "first") -> np.ndarray:
    """Indices of the frames fed to the I3D: the first `num_frames`, or spread evenly."""
    if total < num_frames:
        raise ValueError(f"video has {total} frames but FVD uses {num_frames} frames per clip")
    if sampling == "first":
        return np.arange(num_frames)
    if sampling == "uniform":
        return np.linspace(0, total - 1, num_frames).round().astype(np.int64)
    raise ValueError(f"unknown frame sampling {sampling!r}; use 'first' or 'uniform'")


def check_i3d_input(x: torch.Tensor, min_frames: int = I3D_MIN_FRAMES) -> None:
    """Enforce the I3D input contract: float (B, 3, T, 224, 224), T >= min_frames, values in [-1, 1]."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"I3D input must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"I3D input must have shape (B, 3, T, {I3D_SIZE}, {I3D_SIZE}), got {tuple(x.shape)}")
    if tuple(x.shape[3:]) != (I3D_SIZE, I3D_SIZE):
        raise ValueError(
            f"I3D input must be {I3D_SIZE}x{I3D_SIZE} pixels, got {x.shape[3]}x{x.shape[4]}; "
            "resize the frames first (preprocess_for_i3d does)"
        )
    if x.shape[2] < min_frames:
        raise ValueError(f"I3D input needs at least {min_frames} frames, got {x.shape[2]}")
    if not torch.isfinite(x).all():
        raise ValueError("I3D input contains NaN or inf")
    low, high = float(x.min()), float(x.max())
    if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
        raise ValueError(
            f"I3D input values must lie in [-1, 1], got [{low:.3f}, {high:.3f}]; "
            "uint8 frames map to x / 127.5 - 1"
        )


def preprocess_for_i3d(
    frames: np.ndarray,
    num_frames: int = I3D_NUM_FRAMES,
    sampling: FrameSampling = "first",
) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, num_frames, 224, 224) in [-1, 1].

    Frames are resized (whole frame, bilinear with antialiasing) to 224x224 as the common FVD
    code does; the aspect ratio is not kept.
    """
    frames = check_frames(frames)
    picked = frames[select_frame_indices(frames.shape[0], num_frames, sampling)]
    video = torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2).float() / 255.0
    if tuple(video.shape[-2:]) != (I3D_SIZE, I3D_SIZE):
        video = F.interpolate(video, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False, antialias=True)
    video = (video * 2.0 - 1.0).clamp(-1.0, 1.0)
    return video.permute(1, 0, 2, 3).contiguous()


@dataclass
class I3DFeatureExtractor:
    """A TorchScript I3D with its input contract (see the module docstring)."""

    module: torch.jit.ScriptModule
    device: torch.device
    num_frames: int = I3D_NUM_FRAMES
    min_frames: int = I3D_MIN_FRAMES
    sampling: FrameSampling = "first"
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.num_frames < self.min_frames:
            raise ValueError(f"num_frames={self.num_frames} is below the I3D minimum of {self.min_frames}")

    @torch.no_grad()
    def features_of_batch(self, x: torch.Tensor) -> np.ndarray:
        """(B, D) float64 features of a checked (B, 3, T, 224, 224) batch in [-1, 1]."""
        check_i3d_input(x, self.min_frames)
        out = self.module(x.to(self.device), rescale=False, resize=False, return_features=True)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"I3D must return (B, D) features for B={x.shape[0]}, got {shape}")
        return out.double().cpu().numpy()

    def features(self, videos: Iterable[np.ndarray]) -> np.ndarray:
        """(N, D) features of uint8 (T, H, W, 3) videos, processed in batches."""
        rows: list[np.ndarray] = []
        batch: list[torch.Tensor] = []
        for video in videos:
            batch.append(preprocess_for_i3d(video, self.num_frames, self.sampling))
            if len(batch) == self.batch_size:
                rows.append(self.features_of_batch(torch.stack(batch)))
                batch = []
        if batch:
            rows.append(self.features_of_batch(torch.stack(batch)))
        if not rows:
            raise ValueError("no videos given")
        return np.concatenate(rows)


def load_i3d(
    path: str | Path,
    device: str = "cpu",
    num_frames: int = I3D_NUM_FRAMES,
    min_frames: int = I3D_MIN_FRAMES,
    sampling: FrameSampling = "first",
    batch_size: int = 4,
) -> I3DFeatureExtractor:
    """Load a TorchScript I3D file from a local path (never downloads)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"I3D TorchScript file {file} does not exist (e.g. i3d_torchscript.pt)")
    torch_device = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, still needed
        module = torch.jit.load(str(file), map_location=torch_device)
    module.eval()
    return I3DFeatureExtractor(
        module=module,
        device=torch_device,
        num_frames=num_frames,
        min_frames=min_frames,
        sampling=sampling,
        batch_size=batch_size,
    )


def fvd(extractor: I3DFeatureExtractor, generated: Iterable[np.ndarray], reference: Iterable[np.ndarray]) -> float:
    """FVD (METHOD.md §6): Fréchet distance of I3D features of generated vs reference videos."""
    return frechet_distance(extractor.features(generated), extractor.features(reference))


# --------------------------------------------------------------------------------------------
# Tiny random models for the demo profile
# --------------------------------------------------------------------------------------------


def build_tiny_clip(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a tiny random `CLIPModel` with an offline byte-level tokenizer and a processor.

    The tokenizer's vocabulary is the 256 byte symbols (with and without the end-of-word
    suffix) plus the start/end tokens and no merges, so any text tokenizes. Reload with
    `load_clip`.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer  # deferred: heavy, demo only
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # deferred: heavy, demo only
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # deferred: heavy, demo only

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


class _TinyI3D(torch.nn.Module):
    """Stand-in with the common I3D's call contract: (B, 3, T>=10, 224, 224) in [-1, 1] -> (B, D).

    `rescale` and `resize` are accepted for signature compatibility and ignored (callers pass
    False: inputs are already in [-1, 1] at 224x224).
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=(3, 16, 16), stride=(2, 16, 16))
        self.head = torch.nn.Linear(8, feature_dim)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224:
            raise ValueError("tiny I3D expects (B, 3, T, 224, 224)")
        if x.shape[2] < 10:
            raise ValueError("tiny I3D expects at least 10 frames")
        hidden = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        features = self.head(hidden)
        if return_features:
            return features
        return torch.softmax(features, dim=-1)


def build_tiny_i3d(path: str | Path, seed: int = 0, feature_dim: int = 32) -> Path:
    """Save a tiny random TorchScript I3D stand-in (same contract as the real one) to `path`."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _TinyI3D(feature_dim).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, still works
        scripted = torch.jit.script(module)
    scripted.save(str(file))
    return file
