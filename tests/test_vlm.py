"""Relation accuracy with a VLM (METHOD.md §6): parsing, scoring, both backends."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from dreamrelation.perception import vlm
from dreamrelation.perception.config import VLMConfig


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", True),
        ("yes", True),
        ("**No**", False),
        ("NO", False),
        ("yes, they are", True),
        ("Yes, the dog is shaking hands with the cat.", True),
        ("No, they are walking apart.", False),
        ("The answer is no", False),
        ("The answer is: Yes.", True),
        ("Answer: no", False),
        ("My final answer would be yes.", True),
        ("I think there is no handshake here.", False),
        ("'Yes'", True),
        ("- yes", True),
        ("<think>maybe yes, maybe no</think>No.", False),
        ("Yep", True),
        ("Nope.", False),
        ("", None),
        (None, None),
        ("Maybe.", None),
        ("I cannot tell from these frames.", None),
        ("It could be yes or no.", None),
        ("not sure", None),
        ("Noted. I don't know", None),
        ("...", None),
    ],
)
def test_parse_yes_no(text: str | None, expected: bool | None) -> None:
    assert vlm.parse_yes_no(text) is expected


def test_summarize_answers_by_hand() -> None:
    answers = [["Yes.", "No", "maybe"], ["yes", "YES", "no"]]
    result = vlm.summarize_answers(answers)
    assert result.per_repeat == pytest.approx([1 / 3, 2 / 3])
    assert result.mean == pytest.approx(0.5)
    assert result.std == pytest.approx(1 / 6)  # population std over repeats
    assert result.n_unparseable == 1 and result.unparseable_per_repeat == [1, 0]
    assert result.verdicts == [[True, False, None], [True, True, False]]
    excluded = vlm.summarize_answers(answers, policy="exclude")
    assert excluded.per_repeat == pytest.approx([1 / 2, 2 / 3])
    assert excluded.n_unparseable == 1


def test_all_unparseable_under_exclude_is_nan_and_json_null() -> None:
    result = vlm.summarize_answers([["hmm", "??"]], policy="exclude")
    assert math.isnan(result.mean) and result.n_unparseable == 2
    data = result.to_dict()
    assert data["mean"] is None and data["per_repeat"] == [None]
    json.dumps(data)
    assert vlm.summarize_answers([["hmm", "??"]]).mean == 0.0  # count_as_no


def test_summarize_answers_validates() -> None:
    with pytest.raises(ValueError, match="one answer per video"):
        vlm.summarize_answers([["yes"], ["yes", "no"]])
    with pytest.raises(ValueError, match="policy"):
        vlm.summarize_answers([["yes"]], policy="drop")  # type: ignore[arg-type]


def test_question_template_and_config_validation() -> None:
    template = "Is {relation} shown? Prompt: {prompt}"
    assert vlm.relation_question(template, "handshaking", "A dog.") == "Is handshaking shown? Prompt: A dog."
    with pytest.raises(ValidationError, match="unknown placeholder"):
        VLMConfig(backend="transformers", model_dir="x", question_template="Is {subject} there?")
    with pytest.raises(ValidationError, match="needs base_url and model"):
        VLMConfig(backend="openai", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValidationError, match="needs model_dir"):
        VLMConfig(backend="transformers")


def test_sample_frames_spreads_evenly() -> None:
    video = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(3, axis=3)
    assert vlm.sample_frames(video, 4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert len(vlm.sample_frames(video[:2], 8)) == 2
    with pytest.raises(ValueError, match="uint8"):
        vlm.sample_frames(video.astype(np.float32), 4)


class ScriptedBackend:
    """A fake VLM for plumbing tests: answers from a script, records every call."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls: list[tuple[int, str, int]] = []

    def ask(self, frames: np.ndarray, question: str, seed: int) -> str:
        self.calls.append((len(frames), question, seed))
        return self.script[(len(self.calls) - 1) % len(self.script)]


def _videos(count: int, frames: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (frames, 24, 32, 3), dtype=np.uint8) for _ in range(count)]


def test_relation_accuracy_asks_every_video_every_repeat() -> None:
    backend = ScriptedBackend(["Yes.", "no", "unclear"])
    seen: list[tuple[int, int]] = []
    result = vlm.relation_accuracy(
        backend, _videos(3), ["q0", "q1", "q2"], repeats=2, num_frames=4, seed=7,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [c[0] for c in backend.calls] == [4] * 6
    assert [(c[1], c[2]) for c in backend.calls] == [("q0", 7), ("q1", 7), ("q2", 7), ("q0", 8), ("q1", 8), ("q2", 8)]
    assert seen == [(i, 6) for i in range(1, 7)]
    assert result.per_repeat == pytest.approx([1 / 3, 1 / 3])
    assert result.n_unparseable == 2 and result.repeats == 2 and result.n_videos == 3
    with pytest.raises(ValueError, match="2 videos but 1 questions"):
        vlm.relation_accuracy(backend, _videos(2), ["q"])


# ---- OpenAI-compatible API backend against a local test double ---------------------------


class ChatAPITestDouble:
    """TEST DOUBLE, not a model: a tiny OpenAI-compatible chat-completions server on 127.0.0.1.

    It answers POST /v1/chat/completions with scripted replies (status, body) in order, and
    records the requests it received. It binds an ephemeral port and is shut down on exit.
    """

    def __init__(self, replies: list[tuple[int, Any]]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        double = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                double.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                status, payload = double.replies.pop(0) if double.replies else (500, "script exhausted")
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[ChatAPITestDouble]:
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=5)


def _completion(text: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def _api_config(base_url: str, **extra: Any) -> VLMConfig:
    return VLMConfig(
        backend="openai", base_url=base_url, model="test-vlm", api_key_env="DR_TEST_KEY",
        num_frames=3, max_image_side=16, timeout_s=5, temperature=0.5, **extra,
    )


def test_api_backend_sends_frames_and_parses_answers() -> None:
    replies = [
        (200, _completion("Yes.")),
        (200, _completion([{"type": "text", "text": "**No**"}])),
        (200, _completion("The answer is no")),
        (200, _completion("I am not sure.")),
    ]
    with ChatAPITestDouble(replies).running() as server:
        config = _api_config(server.base_url)
        backend = vlm.make_vlm_backend(config, environ={"DR_TEST_KEY": "secret-123"})
        with backend:
            result = vlm.relation_accuracy(
                backend, _videos(2), ["Shaking hands?", "Hugging?"], repeats=2, num_frames=config.num_frames, seed=3
            )
    assert result.verdicts == [[True, False], [False, None]]
    assert result.per_repeat == pytest.approx([0.5, 0.0]) and result.n_unparseable == 1
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret-123"
    body = first["body"]
    assert body["model"] == "test-vlm" and body["seed"] == 3 and body["temperature"] == 0.5
    assert [r["body"]["seed"] for r in server.requests] == [3, 3, 4, 4]
    content = body["messages"][0]["content"]
    assert [part["type"] for part in content] == ["image_url"] * 3 + ["text"]
    assert content[-1]["text"] == "Shaking hands?"
    url = content[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG" and max(image.size) <= 16


def test_api_backend_retries_then_fails_clearly() -> None:
    replies = [(503, "busy"), (200, _completion("yes")), (400, {"error": "bad image"}), (200, "not json")]
    with ChatAPITestDouble(replies).running() as server:
        backend = vlm.OpenAIChatBackend(server.base_url, "m", max_retries=1, retry_backoff_s=0.0, timeout_s=5)
        frames = _videos(1)[0][:1]
        assert backend.ask(frames, "q", 0) == "yes"
        with pytest.raises(vlm.VLMRequestError, match="HTTP 400"):
            backend.ask(frames, "q", 0)
        with pytest.raises(vlm.VLMRequestError, match="not a chat completion"):
            backend.ask(frames, "q", 0)
        backend.close()
    assert server.requests[0]["auth"] is None  # no key configured -> no header


def test_api_backend_unreachable_server_and_missing_key() -> None:
    with ChatAPITestDouble([]).running() as server:
        url = server.base_url
    backend = vlm.OpenAIChatBackend(url, "m", max_retries=1, retry_backoff_s=0.0, timeout_s=2)
    with pytest.raises(vlm.VLMRequestError, match="failed after 2 attempt"):
        backend.ask(_videos(1)[0][:1], "q", 0)
    backend.close()
    with pytest.raises(vlm.VLMRequestError, match="DR_TEST_KEY"):
        vlm.make_vlm_backend(_api_config(url), environ={})


# ---- Local transformers backend on the tiny demo VLM -------------------------------------


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vlm.build_tiny_vlm(tmp_path_factory.mktemp("vlm"))


def test_local_backend_end_to_end_on_tiny_vlm(tiny_vlm_dir: Path) -> None:
    config = VLMConfig(backend="transformers", model_dir=str(tiny_vlm_dir), repeats=2, num_frames=2, max_new_tokens=4)
    backend = vlm.make_vlm_backend(config)
    assert isinstance(backend, vlm.TransformersVLMBackend)
    videos = _videos(2)
    questions = [vlm.relation_question(config.question_template, "handshaking")] * 2
    result = vlm.relation_accuracy(backend, videos, questions, repeats=config.repeats, num_frames=config.num_frames)
    assert result.repeats == 2 and result.n_videos == 2
    assert all(isinstance(answer, str) for row in result.answers for answer in row)
    yes_no = sum(v is not None for row in result.verdicts for v in row)
    assert yes_no + result.n_unparseable == 4
    # Same seed -> same answer; the sampling RNG does not leak into the caller's.
    frames = vlm.sample_frames(videos[0], 2)
    assert backend.ask(frames, questions[0], 5) == backend.ask(frames, questions[0], 5)
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    backend.ask(frames, questions[0], 6)
    assert torch.equal(torch.rand(1), expected)


def test_local_backend_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        vlm.TransformersVLMBackend.from_folder(tmp_path)
