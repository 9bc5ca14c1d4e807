"""The relation table: the 26 NTU RGB+D two-person actions with a caption each (METHOD.md §8).

Users add or override relations with a YAML or CSV file of `id, name, caption` rows.
Captions follow the paper's style: "A person is shaking hands with a person."
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dreamrelation.data.ntu import normalize_relation_id


@dataclass(frozen=True)
class Relation:
    """One relation: id ('A058' for NTU actions, any slug for user relations), name, caption."""

    id: str
    name: str
    caption: str


# (action, official NTU name, caption)
_NTU_MUTUAL = [
    (50, "punching/slapping other person", "A person is punching another person."),
    (51, "kicking other person", "A person is kicking another person."),
    (52, "pushing other person", "A person is pushing another person."),
    (53, "pat on back of other person", "A person is patting another person on the back."),
    (54, "point finger at the other person", "A person is pointing a finger at another person."),
    (55, "hugging other person", "A person is hugging a person."),
    (56, "giving something to other person", "A person is giving something to a person."),
    (57, "touch other person's pocket", "A person is touching another person's pocket."),
    (58, "handshaking", "A person is shaking hands with a person."),
    (59, "walking towards each other", "A person and a person are walking towards each other."),
    (60, "walking apart from each other", "A person and a person are walking apart from each other."),
    (106, "hit other person with something", "A person is hitting another person with something."),
    (107, "wield knife towards other person", "A person is wielding a knife towards another person."),
    (108, "knock over other person (hit with body)", "A person is knocking over another person."),
    (109, "grab other person's stuff", "A person is grabbing another person's belongings."),
    (110, "shoot at other person with a gun", "A person is shooting at another person with a gun."),
    (111, "step on foot", "A person is stepping on another person's foot."),
    (112, "high-five", "A person is giving a high-five to a person."),
    (113, "cheers and drink", "A person and a person are clinking glasses and drinking."),
    (114, "carry something with other person", "A person and a person are carrying something together."),
    (115, "take a photo of other person", "A person is taking a photo of another person."),
    (116, "follow other person", "A person is following another person."),
    (117, "whisper in other person's ear", "A person is whispering in another person's ear."),
    (118, "exchange things with other person", "A person is exchanging things with a person."),
    (119, "support somebody with hand", "A person is supporting another person with a hand."),
    (120, "finger-guessing game (playing rock-paper-scissors)", "A person and a person are playing rock-paper-scissors."),
]

NTU_MUTUAL_RELATIONS: dict[str, Relation] = {
    f"A{a:03d}": Relation(f"A{a:03d}", name, caption) for a, name, caption in _NTU_MUTUAL
}


class RelationError(ValueError):
    """An unknown relation id or a malformed relation table file."""


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one line: `line L, column C: problem (context)`, 1-based positions."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and (start.line, start.column) != (mark.line, mark.column):
        return f"{text} ({context} at line {start.line + 1}, column {start.column + 1})"
    return f"{text} ({context})" if context else text


def read_user_table(path: str | Path, what: str, error: type[ValueError]) -> Any:
    """Parse a user-supplied .csv (-> list of row dicts) or .yaml/.yml (-> its data) file.

    Errors name the file and what it was for (`what`, e.g. "relation table").
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise error(f"{what} {path} is not valid YAML: {describe_yaml_error(exc)}") from None
    raise error(f"{what} {path}: use a .yaml, .yml or .csv file")


def load_relation_table(path: str | Path | None = None, base: dict[str, Relation] | None = None) -> dict[str, Relation]:
    """The 26 NTU relations (or `base`), updated with the rows of a user YAML/CSV file if given.

    YAML: a list of mappings, or a mapping id -> {name, caption}. CSV: header `id,name,caption`.
    A row for an existing id overrides it; `name` may be omitted for overrides. A caption may
    be a template with `{subject1}` and `{subject2}` (filled from captions.subject_words).
    """
    table = dict(NTU_MUTUAL_RELATIONS if base is None else base)
    if path is None:
        return table
    data = read_user_table(path, "relation table", RelationError) or []
    rows = [{"id": k, **(v or {})} for k, v in data.items()] if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise RelationError(f"relation table {path}: expected a list of rows or a mapping of ids")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not str(row.get("id") or "").strip():
            raise RelationError(f"relation table {path}, row {number}: every row needs an 'id'")
        rel_id = normalize_relation_id(row["id"])
        old = table.get(rel_id)
        caption = str(row.get("caption") or (old.caption if old else "")).strip()
        name = str(row.get("name") or (old.name if old else rel_id)).strip()
        if not caption:
            raise RelationError(f"relation table {path}, row {number} ({rel_id}): a new relation needs a 'caption'")
        table[rel_id] = Relation(rel_id, name, caption)
    return table


def get_relation(relation_id: str | int, table: dict[str, Relation] | None = None) -> Relation:
    """Look a relation up; an unknown id raises RelationError saying what the known ones are."""
    table = NTU_MUTUAL_RELATIONS if table is None else table
    rel_id = normalize_relation_id(relation_id)
    if rel_id not in table:
        raise RelationError(_unknown_relation_message(relation_id, rel_id, table))
    return table[rel_id]


def _unknown_relation_message(given: str | int, rel_id: str, table: dict[str, Relation]) -> str:
    """Why the id is unknown (a one-person NTU action?), the known relations, and how to add one."""
    if not set(NTU_MUTUAL_RELATIONS) <= set(table):  # a folder dataset's table
        known = "; ".join(f"{r.id} ({r.name})" for r in table.values()) or "none"
        return (
            f"unknown relation {given!r} (id {rel_id!r}). The dataset's relations (ids are the slugs of the folder "
            f"names under select.dataset_root) are: {known}"
        )
    is_ntu_action = rel_id[:1] == "A" and rel_id[1:].isdigit() and 1 <= int(rel_id[1:]) <= 120
    why = f": {rel_id} is a one-person NTU action; a relation needs two people" if is_ntu_action else ""
    mutual = "; ".join(f"{r.id} {r.name}" for r in NTU_MUTUAL_RELATIONS.values())
    own = sorted(set(table) - set(NTU_MUTUAL_RELATIONS))
    own_text = f" Relations from your relations_file: {', '.join(own)}." if own else ""
    return (
        f"unknown relation {given!r}{why}. The {len(NTU_MUTUAL_RELATIONS)} two-person NTU actions are: {mutual}."
        f"{own_text} To add a relation of your own, list it (id, name, caption) in a YAML or CSV "
        "relation table and name that file in the relations_file config option, "
        "e.g. -s relations_file=my_relations.yaml"
    )
