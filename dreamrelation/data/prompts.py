"""Evaluation prompts (METHOD.md §6): 10 per relation with unusual subjects.

The shipped set is `dreamrelation/resources/eval_prompts.yaml` (26 NTU two-person relations).
Users can pass their own YAML or JSON file in either of two formats:

    relations:                      # full format (as shipped); `name` is optional
      A058:
        name: handshaking
        prompts: ["A dog is shaking hands with a cat.", ...]

    A058: ["A dog is shaking hands with a cat.", ...]    # plain mapping

Relation ids are normalized like everywhere else in the package ("58", "A58" -> "A058");
ids of user relations that are not NTU numbers pass unchanged.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dreamrelation.data.ntu import normalize_relation_id

SUFFIXES = (".yaml", ".yml", ".json")
_ENTRY_KEYS = frozenset({"name", "prompts"})
_TOP_KEYS = frozenset({"version", "relations"})


class PromptFileError(ValueError):
    """A malformed evaluation prompt file."""


def default_eval_prompts_path() -> Path:
    """Path of the shipped prompt set."""
    return Path(str(resources.files("dreamrelation") / "resources" / "eval_prompts.yaml"))


def load_eval_prompts(path: str | Path | None = None) -> dict[str, list[str]]:
    """Relation id -> prompts, from `path` (YAML/JSON) or the shipped set; validated."""
    file = default_eval_prompts_path() if path is None else Path(path)
    if not file.is_file():
        raise PromptFileError(f"prompt file {file} does not exist")
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise PromptFileError(f"prompt file {file}: unknown format {suffix!r}; use one of {', '.join(SUFFIXES)}")
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PromptFileError(f"prompt file {file} cannot be parsed: {error}") from error
    return parse_eval_prompts(data, source=str(file))


def parse_eval_prompts(data: Any, source: str = "<data>") -> dict[str, list[str]]:
    """Validate parsed prompt data (either format) and return relation id -> prompts."""
    if not isinstance(data, dict) or not data:
        raise PromptFileError(f"{source}: expected a non-empty mapping of relation ids to prompts")
    if "relations" in data:
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise PromptFileError(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
        if data.get("version", 1) != 1:
            raise PromptFileError(f"{source}: unsupported version {data['version']!r}; this code reads version 1")
        relations = data["relations"]
        if not isinstance(relations, dict) or not relations:
            raise PromptFileError(f"{source}: 'relations' must be a non-empty mapping")
    else:
        relations = data
    result: dict[str, list[str]] = {}
    for raw_id, entry in relations.items():
        relation = _relation_id(raw_id, source)
        if relation in result:
            raise PromptFileError(f"{source}: relation {relation} is listed twice (as {raw_id!r} too)")
        result[relation] = _prompts(entry, f"{source}: relation {relation}")
    return result


def _relation_id(raw: Any, source: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise PromptFileError(f"{source}: relation id {raw!r} must be a string like 'A058'")
    relation = normalize_relation_id(raw)
    if not relation or any(ch.isspace() for ch in relation):
        raise PromptFileError(f"{source}: relation id {raw!r} must be non-empty without spaces")
    return relation


def _prompts(entry: Any, where: str) -> list[str]:
    if isinstance(entry, dict):
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise PromptFileError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
        if "name" in entry and not isinstance(entry["name"], str):
            raise PromptFileError(f"{where}: 'name' must be a string")
        if "prompts" not in entry:
            raise PromptFileError(f"{where}: missing 'prompts'")
        entry = entry["prompts"]
    if not isinstance(entry, list):
        raise PromptFileError(f"{where}: prompts must be a list of strings, got {type(entry).__name__}")
    if not entry:
        raise PromptFileError(f"{where}: the prompt list is empty")
    prompts: list[str] = []
    for index, prompt in enumerate(entry):
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptFileError(f"{where}: prompt {index} must be a non-empty string, got {prompt!r}")
        text = prompt.strip()
        if text in prompts:
            raise PromptFileError(f"{where}: prompt {index} repeats an earlier prompt: {text!r}")
        prompts.append(text)
    return prompts
