"""Relation accuracy with a vision-language model (METHOD.md §6).

A VLM is shown evenly sampled frames of a generated video and asked whether the video shows
the relation; its free-text answer is parsed to yes/no by `parse_yes_no`. Every video is
asked `repeats` times (default 10, repeat r with seed + r); the accuracy of each repeat is
the fraction of "yes" answers, and the result is the mean ± std (population std) over
repeats. Answers that are neither yes nor no are counted per repeat and reported; by default
they count as "no" (policy "count_as_no"), or they are left out of the denominator ("exclude").

Two backends share one `ask(frames, question, seed) -> str` interface:
- `OpenAIChatBackend`: an OpenAI-compatible chat-completions HTTP API (vLLM, a hosted
  Qwen-VL, ...); frames are sent as base64 JPEG data URLs; the key is read from an
  environment variable whose name is configured.
- `TransformersVLMBackend`: a local image-text-to-text model (`AutoModelForImageTextToText` +
  `AutoProcessor`, e.g. Qwen2-VL or LLaVA) loaded from a folder. The demo profile uses
  `build_tiny_vlm`, a tiny random LLaVA with an offline word-level tokenizer: its answers are
  meaningless, its plumbing is the real one.

One module (~500 lines): answer parsing, both backends, the repeated asking and the accuracy
summary are the one relation-accuracy judge.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np
import torch
from PIL import Image

from dreamrelation.perception.config import DEFAULT_QUESTION_TEMPLATE, VLMConfig

UnparseablePolicy = Literal["count_as_no", "exclude"]

_YES = frozenset({"yes", "yeah", "yep", "yup"})
_NO = frozenset({"no", "nope", "nah"})
_ANSWER_FILLER = frozenset({"is", "would", "be", "will", "my", "final", "the", "a", "simply"})
_THINK_BLOCK = re.compile(r"<think>.*?</think>", flags=re.IGNORECASE | re.DOTALL)


def parse_yes_no(text: str | None) -> bool | None:
    """Parse a VLM answer to True (yes), False (no) or None (unparseable).

    Rules, in order, on the lower-cased words (markdown and punctuation ignored, a leading
    <think>...</think> block dropped): the first word is yes/no; "answer [is] yes/no"; exactly
    one of yes/no occurs anywhere. Anything else ("maybe", both words, empty) is None.
    """
    if not text:
        return None
    words = re.findall(r"[a-z]+", _THINK_BLOCK.sub(" ", text).lower())
    if not words:
        return None
    if words[0] in _YES:
        return True
    if words[0] in _NO:
        return False
    for index, word in enumerate(words):
        if word != "answer":
            continue
        for following in words[index + 1 :]:
            if following in _ANSWER_FILLER:
                continue
            if following in _YES:
                return True
            if following in _NO:
                return False
            break
    seen = {True for word in words if word in _YES} | {False for word in words if word in _NO}
    return seen.pop() if len(seen) == 1 else None


def relation_question(template: str, relation: str, prompt: str = "") -> str:
    """The question for one video: `template` with {relation} and {prompt} filled in."""
    return template.format(relation=relation, prompt=prompt)


def sample_frames(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """`num_frames` frames (or all, if fewer) spread evenly over a uint8 (T, H, W, 3) video."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] < 1:
        raise ValueError("video has no frames")
    count = min(num_frames, frames.shape[0])
    return frames[np.linspace(0, frames.shape[0] - 1, count).round().astype(np.int64)]


class VLMBackend(Protocol):
    """Anything that answers a question about a few frames."""

    def ask(self, frames: np.ndarray, question: str, seed: int) -> str:
        """The model's raw answer to `question` about uint8 (T, H, W, 3) `frames`."""
        ...


# --------------------------------------------------------------------------------------------
# OpenAI-compatible chat-completions backend
# --------------------------------------------------------------------------------------------


class VLMRequestError(RuntimeError):
    """The chat API failed (after retries) or answered with something that is not a completion."""


def api_key_from_env(variable: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The API key from the environment variable `variable`; None when `variable` is None."""
    if variable is None:
        return None
    env = os.environ if environ is None else environ
    key = env.get(variable)
    if not key:
        raise VLMRequestError(
            f"environment variable {variable} (api_key_env) is not set; export the API key there, "
            "or set api_key_env to null for a server without authentication"
        )
    return key


def encode_frame_jpeg(frame: np.ndarray, max_side: int = 512, quality: int = 90) -> str:
    """A `data:image/jpeg;base64,...` URL of one uint8 (H, W, 3) frame, downscaled to `max_side`."""
    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIChatBackend:
    """Asks an OpenAI-compatible `POST {base_url}/chat/completions` endpoint (uses httpx)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 1.0,
        max_tokens: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        max_image_side: int = 512,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.max_image_side = max_image_side
        self.retry_backoff_s = retry_backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    @classmethod
    def from_config(cls, config: VLMConfig, environ: Mapping[str, str] | None = None) -> OpenAIChatBackend:
        if not config.base_url or not config.model:
            raise ValueError("the openai backend needs base_url and model")
        return cls(
            base_url=config.base_url,
            model=config.model,
            api_key=api_key_from_env(config.api_key_env, environ),
            temperature=config.temperature,
            max_tokens=config.max_new_tokens,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            max_image_side=config.max_image_side,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenAIChatBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_body(self, frames: np.ndarray, question: str, seed: int) -> dict[str, Any]:
        """The JSON body: one user message with the frames as image parts, then the question."""
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": encode_frame_jpeg(frame, self.max_image_side)}}
            for frame in frames
        ]
        content.append({"type": "text", "text": question})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": seed,
        }

    def ask(self, frames: np.ndarray, question: str, seed: int) -> str:
        body = self.request_body(frames, question, seed)
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TransportError as error:
                last_error = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in _RETRY_STATUS:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise VLMRequestError(f"{self.url} answered HTTP {response.status_code}: {response.text[:500]}")
            return _completion_text(response)
        raise VLMRequestError(f"{self.url} failed after {self.max_retries + 1} attempt(s): {last_error}")


def _completion_text(response: httpx.Response) -> str:
    """The assistant text of a chat-completions response (content string or text parts)."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise VLMRequestError(f"not a chat completion: {response.text[:500]}") from error
    if content is None:
        return ""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


# --------------------------------------------------------------------------------------------
# Local transformers backend
# --------------------------------------------------------------------------------------------


class TransformersVLMBackend:
    """A local image-text-to-text model; frames are passed as a list of images in one message."""

    def __init__(
        self, model: Any, processor: Any, device: torch.device, temperature: float = 1.0, max_new_tokens: int = 16
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_folder(
        cls,
        model_dir: str | Path,
        device: str = "cpu",
        temperature: float = 1.0,
        max_new_tokens: int = 16,
        dtype: str = "float32",
    ) -> TransformersVLMBackend:
        """Load `AutoModelForImageTextToText` + `AutoProcessor` from a local folder (never downloads)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor  # deferred: heavy, local VLM only

        folder = Path(model_dir)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"VLM folder {folder} has no config.json; expected a saved transformers VLM")
        torch_device = torch.device(device)
        model = AutoModelForImageTextToText.from_pretrained(
            folder, local_files_only=True, dtype=getattr(torch, dtype)
        ).to(torch_device)
        model.eval()
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        return cls(model, processor, torch_device, temperature, max_new_tokens)

    @torch.no_grad()
    def ask(self, frames: np.ndarray, question: str, seed: int) -> str:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(len(frames))]
        content.append({"type": "text", "text": question})
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        images = [Image.fromarray(frame) for frame in frames]
        inputs = self.processor(text=[prompt], images=images, return_tensors="pt")
        inputs = inputs.to(device=self.device, dtype=self.model.dtype)  # casts floating tensors only
        sampling: dict[str, Any] = {"do_sample": self.temperature > 0}
        if self.temperature > 0:
            sampling["temperature"] = self.temperature
        rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed)
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()


def make_vlm_backend(config: VLMConfig, environ: Mapping[str, str] | None = None) -> VLMBackend:
    """The backend a `VLMConfig` names."""
    if config.backend == "openai":
        return OpenAIChatBackend.from_config(config, environ)
    if not config.model_dir:
        raise ValueError("the transformers backend needs model_dir")
    return TransformersVLMBackend.from_folder(
        config.model_dir, config.device, config.temperature, config.max_new_tokens, config.dtype
    )


# --------------------------------------------------------------------------------------------
# Relation accuracy
# --------------------------------------------------------------------------------------------


@dataclass
class RelationAccuracy:
    """Relation accuracy over repeats (METHOD.md §6), with every raw answer kept."""

    mean: float
    std: float
    per_repeat: list[float]
    n_videos: int
    repeats: int
    n_unparseable: int
    unparseable_per_repeat: list[int]
    policy: str
    answers: list[list[str]]  # [repeat][video]
    verdicts: list[list[bool | None]]  # [repeat][video]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN becomes None)."""
        data = asdict(self)
        data["mean"] = _finite_or_none(self.mean)
        data["std"] = _finite_or_none(self.std)
        data["per_repeat"] = [_finite_or_none(value) for value in self.per_repeat]
        return data


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarize_answers(answers: Sequence[Sequence[str]], policy: UnparseablePolicy = "count_as_no") -> RelationAccuracy:
    """Parse raw answers [repeat][video] and compute accuracy per repeat, mean and std.

    "count_as_no": accuracy = yes / videos. "exclude": accuracy = yes / parseable answers
    (NaN for a repeat with none). The unparseable count is reported under both policies.
    """
    if policy not in ("count_as_no", "exclude"):
        raise ValueError(f"unknown unparseable policy {policy!r}")
    if not answers or not answers[0]:
        raise ValueError("no answers to summarize")
    n_videos = len(answers[0])
    if any(len(row) != n_videos for row in answers):
        raise ValueError("every repeat must hold one answer per video")
    verdicts = [[parse_yes_no(answer) for answer in row] for row in answers]
    per_repeat: list[float] = []
    unparseable: list[int] = []
    for row in verdicts:
        yes = sum(1 for verdict in row if verdict is True)
        missing = sum(1 for verdict in row if verdict is None)
        denominator = n_videos if policy == "count_as_no" else n_videos - missing
        per_repeat.append(yes / denominator if denominator else math.nan)
        unparseable.append(missing)
    finite = np.array([value for value in per_repeat if math.isfinite(value)], dtype=np.float64)
    return RelationAccuracy(
        mean=float(finite.mean()) if finite.size else math.nan,
        std=float(finite.std()) if finite.size else math.nan,
        per_repeat=per_repeat,
        n_videos=n_videos,
        repeats=len(answers),
        n_unparseable=sum(unparseable),
        unparseable_per_repeat=unparseable,
        policy=policy,
        answers=[list(row) for row in answers],
        verdicts=verdicts,
    )


def ask_repeated(
    backend: VLMBackend,
    videos: Sequence[np.ndarray],
    questions: Sequence[str],
    repeats: int = 10,
    num_frames: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """Raw answers [repeat][video]: every video asked `repeats` times (repeat r uses seed + r)."""
    if len(videos) != len(questions):
        raise ValueError(f"{len(videos)} videos but {len(questions)} questions")
    if not videos:
        raise ValueError("no videos given")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    sampled = [sample_frames(video, num_frames) for video in videos]
    total = repeats * len(sampled)
    answers: list[list[str]] = []
    for repeat in range(repeats):
        row: list[str] = []
        for frames, question in zip(sampled, questions, strict=True):
            row.append(backend.ask(frames, question, seed + repeat))
            if progress is not None:
                progress(len(answers) * len(sampled) + len(row), total)
        answers.append(row)
    return answers


def relation_accuracy(
    backend: VLMBackend,
    videos: Sequence[np.ndarray],
    questions: Sequence[str],
    repeats: int = 10,
    num_frames: int = 8,
    seed: int = 0,
    policy: UnparseablePolicy = "count_as_no",
    progress: Callable[[int, int], None] | None = None,
) -> RelationAccuracy:
    """Relation accuracy (METHOD.md §6) of uint8 (T, H, W, 3) videos, one question each."""
    answers = ask_repeated(backend, videos, questions, repeats, num_frames, seed, progress)
    return summarize_answers(answers, policy)


# --------------------------------------------------------------------------------------------
# Tiny random VLM for the demo profile
# --------------------------------------------------------------------------------------------

_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_tiny_vlm(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a tiny random LLaVA (CLIP vision tower + Llama text model) with its processor.

    The tokenizer is a word-level `tokenizers` model built offline from the words of the
    default question plus yes/no; reload with `TransformersVLMBackend.from_folder`.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers  # deferred: demo only
    from transformers import (  # deferred: heavy, demo only
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # deferred: demo only

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
    text = DEFAULT_QUESTION_TEMPLATE.lower() + " yes no user assistant : . , ? ! relation prompt"
    words = sorted(set(re.findall(r"[a-z]+|[^\sa-z]", text)))
    vocab = {token: index for index, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    patch_size = 8
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=_TINY_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<s>"],
            eos_token_id=vocab["</s>"],
        ),
        image_token_index=vocab["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
