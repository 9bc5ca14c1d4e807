"""Subject segmentation with Grounding DINO and SAM2 video propagation (METHOD.md §3).

Both models are the transformers implementations (DESIGN.md: not the groundingdino-py / sam2
packages), always loaded from LOCAL folders; nothing is downloaded. For the demo profile,
`build_tiny_detector` / `build_tiny_segmenter` write tiny randomly initialised models of the same
classes to a folder, which is then loaded through the very same `load_detector` /
`load_segmenter` as a real checkpoint.

Flow for one clip (frames already in training geometry, uint8 (N, H, W, 3)):
- `grounded-sam2`: `find_two_people` runs Grounding DINO with the text prompt on frame 0 and, if
  fewer than two people are found, on later frames; the two best boxes (after NMS) become
  box prompts of SAM2 objects 1 and 2 on that frame.
- `skeleton-sam2`: the skeleton boxes of the two bodies on the first frame where both exist are
  the prompts.
- `propagate_boxes` tracks the objects forward to the last frame and, if the prompt frame is not
  frame 0, backward to frame 0. Identity over the clip is the tracker's object id.

transformers' `Sam2VideoProcessor` needs torchvision (not installed here: its CUDA build is
5.5 GB), so `Sam2Segmenter` does the processor's three small jobs itself, exactly as it does
them: resize frames to the model's square input with bilinear antialiasing, rescale to [0, 1]
and normalise (ImageNet mean/std unless the folder's `video_preprocessor_config.json` says
otherwise); scale box corners x by S/W and y by S/H; upscale the low-resolution mask logits
to SxS and then to HxW (bilinear) and threshold them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessorPil,
    GroundingDinoProcessor,
    Sam2HieraDetConfig,
    Sam2VideoConfig,
    Sam2VideoInferenceSession,
    Sam2VideoModel,
    Sam2VisionConfig,
    SwinConfig,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from dreamrelation.data.masks import NotEnoughSubjects

TINY_DETECTOR = "tiny-grounding-dino"
TINY_SEGMENTER = "tiny-sam2-video"
_TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "person", "people", "man", "woman"]
_BOX_LABELS = (2, 3)  # SAM2 point labels of a box's top-left and bottom-right corners


# -- loading -------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class Detector:
    """A Grounding DINO model and its processor."""

    model: GroundingDinoForObjectDetection
    processor: GroundingDinoProcessor
    device: torch.device


@dataclass
class Sam2Segmenter:
    """A SAM2 video model and the frame preprocessing its checkpoint expects."""

    model: Sam2VideoModel
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device


def _require_folder(folder: str | os.PathLike[str], what: str) -> Path:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} folder {path} has no config.json: give a local transformers checkpoint folder "
            "(models are never downloaded at run time)"
        )
    return path


def load_detector(folder: str | os.PathLike[str], device: str = "cpu") -> Detector:
    """Load GroundingDinoForObjectDetection + processor from a local folder."""
    path = _require_folder(folder, "Grounding DINO")
    processor = GroundingDinoProcessor(
        image_processor=AutoImageProcessor.from_pretrained(path, backend="pil"),
        tokenizer=AutoTokenizer.from_pretrained(path),
    )
    model = GroundingDinoForObjectDetection.from_pretrained(path).to(device).eval()
    return Detector(model, processor, torch.device(device))


def load_segmenter(folder: str | os.PathLike[str], device: str = "cpu") -> Sam2Segmenter:
    """Load Sam2VideoModel from a local folder, with its frame normalisation."""
    path = _require_folder(folder, "SAM2 video")
    model = Sam2VideoModel.from_pretrained(path).to(device).eval()
    mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    preprocessor = path / "video_preprocessor_config.json"
    if preprocessor.is_file():
        settings = json.loads(preprocessor.read_text())
        mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
    image_size = model.config.image_size
    if not isinstance(image_size, int):
        image_size = int(image_size[0])
    return Sam2Segmenter(model, image_size, tuple(mean), tuple(std), torch.device(device))


# -- tiny demo models ----------------------------------------------------------------------------
def _publish(build_into: Path, target: Path) -> Path:
    """Move a finished build folder to `target` atomically (another process may have won the race)."""
    try:
        build_into.rename(target)
    except OSError:
        shutil.rmtree(build_into, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def build_tiny_detector(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random GroundingDinoForObjectDetection (+ BERT tokenizer, processor) to `folder`."""
    target = Path(folder)
    if (target / "config.json").is_file():
        return target
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    vocab_file = tmp / "vocab.txt"
    vocab_file.write_text("\n".join(_TINY_VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file))  # transformers 5: `vocab=`, not `vocab_file=`
    vocab_file.unlink()
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
        window_size=4, out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=len(_TINY_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, num_queries=30, max_text_len=32,
        encoder_layers=1, decoder_layers=2,  # 2: the box heads of decoder layers are tied to layer 0
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
    )
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(tmp)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 112})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)
    return _publish(tmp, target)


def build_tiny_segmenter(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random Sam2VideoModel (64x64 input) to `folder`.

    Constraints of the transformers SAM2-video code met here: the memory encoder must output 64
    channels (the memory cross-attention's key/value width is fixed to 64) and the hidden size
    must be a larger multiple of 64 (object pointers are split into 64-wide tokens).
    """
    target = Path(folder)
    if (target / "config.json").is_file():
        return target
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    size, hidden = 64, 128
    backbone = Sam2HieraDetConfig(
        hidden_size=16, image_size=[size, size], embed_dim_per_stage=[16, 32, 64, 128],
        blocks_per_stage=[1, 1, 2, 1], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=hidden,
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": hidden, "image_size": size, "patch_size": 16, "mask_input_channels": 8},
        mask_decoder_config={"hidden_size": hidden, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
        image_size=size, num_maskmem=3, max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[4, 4],
        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64,
    )
    torch.manual_seed(seed)
    Sam2VideoModel(config).save_pretrained(tmp)
    return _publish(tmp, target)


def resolve_mask_models(
    detector_dir: str | None, segmenter_dir: str | None, models_cache: str | os.PathLike[str], seed: int = 0
) -> tuple[Path, Path]:
    """Model folders to load: the configured ones, or tiny demo models built once under `models_cache`."""
    cache = Path(models_cache)
    detector = Path(detector_dir) if detector_dir else build_tiny_detector(cache / f"{TINY_DETECTOR}-{seed}", seed)
    segmenter = Path(segmenter_dir) if segmenter_dir else build_tiny_segmenter(cache / f"{TINY_SEGMENTER}-{seed}", seed)
    return detector, segmenter


# -- detection -----------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x0, y0, x1, y1 boxes, (n, 4) x (m, 4) -> (n, m)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Indices of boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or box_iou(boxes[i : i + 1], boxes[keep]).max() <= iou:
            keep.append(int(i))
    return np.array(keep, dtype=int)


@torch.inference_mode()
def detect(
    detector: Detector, image: np.ndarray, prompt: str, box_threshold: float, text_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (n, 4) in pixels and scores (n,) of `prompt` in one RGB uint8 image, after NMS, best first."""
    text = prompt.strip().lower()
    text = text if text.endswith(".") else text + "."  # Grounding DINO phrases end with a dot
    inputs = detector.processor(images=[image], text=[text], return_tensors="pt").to(detector.device)
    outputs = detector.model(**inputs)
    result = detector.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
        target_sizes=[image.shape[:2]],
    )[0]
    boxes = result["boxes"].float().cpu().numpy().reshape(-1, 4)
    scores = result["scores"].float().cpu().numpy().reshape(-1)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = boxes[valid], scores[valid]
    keep = nms(boxes, scores)
    return boxes[keep], scores[keep]


def find_two_people(
    detector: Detector,
    frames: np.ndarray,
    prompt: str = "person",
    box_threshold: float = 0.3,
    text_threshold: float = 0.25,
    stride: int = 6,
    max_tries: int = 10,
) -> tuple[int, np.ndarray]:
    """First frame (0, stride, 2*stride, ...) with >= 2 detections, and its two best boxes (2, 4).

    Raises NotEnoughSubjects naming the most people seen when no tried frame has two.
    """
    best = 0
    tries = range(0, len(frames), stride)[:max_tries]
    for frame_idx in tries:
        boxes, _ = detect(detector, frames[frame_idx], prompt, box_threshold, text_threshold)
        if len(boxes) >= 2:
            return frame_idx, boxes[:2]
        best = max(best, len(boxes))
    raise NotEnoughSubjects(
        f"Grounding DINO found at most {best} '{prompt}' box(es) in {len(tries)} frames "
        f"(every {stride}th, threshold {box_threshold}); 2 needed"
    )


# -- SAM2 video propagation ----------------------------------------------------------------------
def _pixel_values(segmenter: Sam2Segmenter, frames: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, S, S) on the model's device, like Sam2VideoVideoProcessor."""
    device = segmenter.device
    video = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    size = (segmenter.image_size, segmenter.image_size)
    video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(segmenter.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(segmenter.std, device=device).view(1, 3, 1, 1)
    return (video / 255.0 - mean) / std


def _add_box(session: Sam2VideoInferenceSession, obj_id: int, frame_idx: int, box: torch.Tensor) -> None:
    """Register a box prompt (already in model-input coordinates) for one object on one frame."""
    obj_idx = session.obj_id_to_idx(obj_id)
    points = {
        "point_coords": box.reshape(1, 1, 2, 2),
        "point_labels": torch.tensor([[list(_BOX_LABELS)]], dtype=torch.int32),
    }
    session.add_point_inputs(obj_idx, frame_idx, points)
    session.remove_mask_inputs(obj_idx, frame_idx)


@torch.inference_mode()
def propagate_boxes(
    segmenter: Sam2Segmenter,
    frames: np.ndarray,
    frame_idx: int,
    boxes: np.ndarray,
    mask_threshold: float = 0.0,
) -> np.ndarray:
    """Track K box-prompted objects over a clip: masks (N, K, H, W) bool, object k = boxes[k].

    The boxes (K, 4, pixels of `frames`) prompt SAM2 objects 1..K on `frame_idx`; propagation
    runs forward to the end and, when frame_idx > 0, backward to frame 0.
    """
    num_frames, height, width = frames.shape[:3]
    device = segmenter.device
    session = Sam2VideoInferenceSession(
        video=_pixel_values(segmenter, frames),
        video_height=height,
        video_width=width,
        inference_device=device,
        inference_state_device=device,
        video_storage_device=device,
        dtype=torch.float32,
    )
    size = segmenter.image_size
    scale = torch.tensor([size / width, size / height, size / width, size / height], dtype=torch.float32)
    obj_ids = list(range(1, len(boxes) + 1))
    for obj_id, box in zip(obj_ids, boxes):
        _add_box(session, obj_id, frame_idx, torch.as_tensor(box, dtype=torch.float32) * scale)
    session.obj_with_new_inputs = list(obj_ids)

    masks = np.zeros((num_frames, len(boxes), height, width), dtype=bool)
    directions = [False, True] if frame_idx > 0 else [False]
    for reverse in directions:
        outputs = segmenter.model.propagate_in_video_iterator(session, start_frame_idx=frame_idx, reverse=reverse)
        for output in outputs:
            order = [output.object_ids.index(obj_id) for obj_id in obj_ids]
            logits = output.pred_masks[order].float()  # (K, 1, h, w)
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            masks[output.frame_idx] = (logits[:, 0] > mask_threshold).cpu().numpy()
    return masks


def first_frame_with_boxes(boxes: np.ndarray) -> int:
    """First frame where every subject has a finite box; boxes (N, K, 4). NotEnoughSubjects if none."""
    both = np.flatnonzero(np.isfinite(boxes).all(axis=(1, 2)))
    if len(both) == 0:
        raise NotEnoughSubjects("no frame has a skeleton box for both subjects")
    return int(both[0])
