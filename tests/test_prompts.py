"""Evaluation prompt set and loader (METHOD.md §6, §8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dreamrelation.data.prompts import (
    PromptFileError,
    default_eval_prompts_path,
    load_eval_prompts,
    parse_eval_prompts,
    prompts_for,
)
from dreamrelation.data.relations import NTU_MUTUAL_RELATIONS

NTU_IDS = [f"A{n:03d}" for n in [*range(50, 61), *range(106, 121)]]


def test_shipped_set_has_ten_prompts_for_each_of_the_26_relations() -> None:
    prompts = load_eval_prompts()
    assert sorted(prompts) == NTU_IDS
    assert all(len(p) == 10 for p in prompts.values())
    everything = [p for group in prompts.values() for p in group]
    assert len(set(everything)) == len(everything) == 260


def test_shipped_prompts_use_caption_style_with_unusual_subjects() -> None:
    for relation, group in load_eval_prompts().items():
        for prompt in group:
            assert prompt[0].isupper() and prompt.endswith("."), (relation, prompt)
            words = prompt.lower().rstrip(".").split()
            assert "person" not in words and "man" not in words and "woman" not in words, prompt


def test_shipped_names_match_the_relation_table() -> None:
    data = yaml.safe_load(default_eval_prompts_path().read_text(encoding="utf-8"))
    for relation, entry in data["relations"].items():
        assert entry["name"] == NTU_MUTUAL_RELATIONS[relation].name


def test_user_file_plain_mapping_yaml_with_id_normalization(tmp_path: Path) -> None:
    file = tmp_path / "mine.yml"
    file.write_text("A58:\n  - ' A cat is shaking hands with a robot. '\n58x:\n  - A fox waves.\n")
    assert load_eval_prompts(file) == {
        "A058": ["A cat is shaking hands with a robot."],
        "58x": ["A fox waves."],
    }


def test_user_file_full_format_json(tmp_path: Path) -> None:
    file = tmp_path / "mine.json"
    file.write_text(json.dumps({"version": 1, "relations": {"A112": {"prompts": ["A owl high-fives a bat."]}}}))
    assert load_eval_prompts(file) == {"A112": ["A owl high-fives a bat."]}


def test_int_ids_from_yaml_are_normalized() -> None:
    assert parse_eval_prompts({58: ["A dog is shaking hands with a cat."]}) == {
        "A058": ["A dog is shaking hands with a cat."]
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "non-empty mapping"),
        ({}, "non-empty mapping"),
        ({"A058": []}, "prompt list is empty"),
        ({"A058": "A dog."}, "must be a list of strings"),
        ({"A058": ["A dog.", 3]}, "prompt 1 must be a non-empty string"),
        ({"A058": ["A dog.", "   "]}, "prompt 1 must be a non-empty string"),
        ({"A058": ["A dog.", "A dog."]}, "repeats an earlier prompt"),
        ({"A58": ["A dog."], "A058": ["A cat."]}, "listed twice"),
        ({"A058": {"prompt": ["A dog."]}}, "unknown key"),
        ({"A058": {"name": "handshaking"}}, "missing 'prompts'"),
        ({"A058": {"name": 5, "prompts": ["A dog."]}}, "'name' must be a string"),
        ({"relations": {}}, "'relations' must be a non-empty mapping"),
        ({"relations": {"A058": ["A dog."]}, "extra": 1}, "unknown top-level key"),
        ({"version": 2, "relations": {"A058": ["A dog."]}}, "unsupported version"),
        ({True: ["A dog."]}, "must be a string like 'A058'"),
        ({"握手": ["A dog."]}, "no ASCII letter or digit"),
    ],
)
def test_invalid_prompt_data_is_rejected_with_a_clear_error(data: object, message: str) -> None:
    with pytest.raises(PromptFileError, match=message):
        parse_eval_prompts(data, source="test")


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="does not exist"):
        load_eval_prompts(tmp_path / "missing.yaml")
    other = tmp_path / "prompts.md"
    other.write_text("A dog is shaking hands with a cat.\n")
    with pytest.raises(PromptFileError, match="unknown format '.md'"):
        load_eval_prompts(other)
    broken = tmp_path / "broken.yaml"
    broken.write_text("A058: [unclosed\n")
    with pytest.raises(PromptFileError, match="cannot be parsed"):
        load_eval_prompts(broken)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{")
    with pytest.raises(PromptFileError, match="cannot be parsed"):
        load_eval_prompts(bad_json)


def test_txt_and_csv_prompt_files_for_relations_of_your_own(tmp_path: Path) -> None:
    """Issue 12: one prompt a line (every relation), or CSV rows per relation (folder names slugged)."""
    txt = tmp_path / "prompts.txt"
    txt.write_text("A bear is fist-bumping a raccoon.\n\n  A cat is fist-bumping a dog.  \n")
    table = load_eval_prompts(txt)
    assert prompts_for(table, "fist_bump") == ["A bear is fist-bumping a raccoon.", "A cat is fist-bumping a dog."]
    assert prompts_for(table, "A058") == prompts_for(table, "fist_bump")
    per_relation = tmp_path / "prompts.csv"
    per_relation.write_text('relation,prompt\nFist Bump,"A bear is fist-bumping a raccoon."\nhug,"A cat hugs a dog."\n'
                            'Fist Bump,"A fox is fist-bumping an owl."\n')
    table = load_eval_prompts(per_relation)
    assert table == {"fist_bump": ["A bear is fist-bumping a raccoon.", "A fox is fist-bumping an owl."],
                     "hug": ["A cat hugs a dog."]}
    assert prompts_for(table, "wave") is None
    only_prompts = tmp_path / "all.csv"
    only_prompts.write_text("prompt\nA bear waves.\n")
    assert prompts_for(load_eval_prompts(only_prompts), "wave") == ["A bear waves."]
    bad = tmp_path / "bad.csv"
    bad.write_text("relation,text\nhug,A cat hugs a dog.\n")
    with pytest.raises(PromptFileError, match="header must be relation,prompt or prompt"):
        load_eval_prompts(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("relation,prompt\nhug,\n")
    with pytest.raises(PromptFileError, match="relation hug: prompt 0 must be a non-empty string"):
        load_eval_prompts(empty)
