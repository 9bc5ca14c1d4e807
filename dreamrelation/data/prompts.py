"""Evaluation prompts (METHOD.md §6): 10 per relation with unusual subjects.

The shipped set is `dreamrelation/resources/eval_prompts.yaml` (26 NTU two-person relations).
Users can pass their own YAML or JSON file in either of two formats:

    relations:                      # full format (as shipped); `name` is optional
      A058:
        name: handshaking
        prompts: ["A dog is shaking hands with a cat.", ...]

    A058: ["A dog is shaking hands with a cat.", ...]    # plain mapping

or, for relations of your own (issue 12), a CSV with the columns `relation,prompt` (one prompt
a row), a CSV with only a `prompt` column, or a `.txt` file with one prompt a line; the last
two give the same prompts to every relation (key `ALL`).

Relation ids are normalized like everywhere else in the package ("58", "A58" -> "A058";
'Fist Bump' -> 'fist_bump').
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dreamrelation.data.ntu import RelationNameError, normalize_relation_id

SUFFIXES = (".yaml", ".yml", ".json", ".csv", ".txt")
#: Key of prompts that apply to every relation (a .txt file, a CSV without a relation column).
ALL = "*"
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
    if suffix == ".txt":
        return {ALL: _prompts([line for line in text.splitlines() if line.strip()], f"{file}")}
    if suffix == ".csv":
        return _csv_prompts(text, str(file))
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PromptFileError(f"prompt file {file} cannot be parsed: {error}") from error
    return parse_eval_prompts(data, source=str(file))


def _csv_prompts(text: str, source: str) -> dict[str, list[str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    columns = set(rows[0]) if rows else set()
    if "prompt" not in columns or not columns <= {"relation", "prompt"}:
        raise PromptFileError(f"{source}: the CSV header must be relation,prompt or prompt, got {sorted(columns)}")
    grouped: dict[str, list[str]] = {}
    for row in rows:
        relation = _relation_id(row["relation"], source) if "relation" in columns else ALL
        grouped.setdefault(relation, []).append(row["prompt"])
    if not grouped:
        raise PromptFileError(f"{source}: the CSV has no prompts")
    return {relation: _prompts(prompts, f"{source}: relation {relation}") for relation, prompts in grouped.items()}


def prompts_for(table: dict[str, list[str]], relation: str) -> list[str] | None:
    """The relation's prompts in a loaded table: its own, else the every-relation ones, else None."""
    return table.get(relation, table.get(ALL))


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
    try:
        return normalize_relation_id(raw)
    except RelationNameError as exc:
        raise PromptFileError(f"{source}: {exc}") from None


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
