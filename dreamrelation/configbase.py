"""The base of every config model: an unknown key is an error that names it and suggests a fix.

A leaf module (it imports only pydantic), so `data/`, `model/` and the pipeline config can all
build on it without importing one another. The check runs wherever a config is validated: YAML
presets, `-s` overrides and Prefect flow parameters alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def unknown_key_message(key: str, valid: Iterable[str]) -> str:
    """`unknown key 'x'; did you mean 'y'?`, or the valid keys when none is close.

    Close means similar spelling (difflib), or else one key being the start of the other, the
    longest such first: `lr_typo` -> `lr`, `sample` -> `sample_every`.
    """
    valid = sorted(valid)
    lowered = key.lower()
    prefixes = [v for v in valid if lowered.startswith(v.lower()) or v.lower().startswith(lowered)]
    close = difflib.get_close_matches(key, valid, n=1) or sorted(prefixes, key=len, reverse=True)[:1]
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key {key!r}; {hint}"


class StrictConfig(BaseModel):
    """A config model whose unknown fields are errors (a typo never passes silently).

    `extra="forbid"` also marks the JSON schema `additionalProperties: false`, so a Prefect
    server refuses such parameters when a run is created.
    """

    model_config = ConfigDict(extra="forbid")

    #: Fields added after artifacts keyed by this config were written, with their default. At that
    #: default they are left out of `str(config)` and `key_dump()`, the forms stage fingerprints
    #: hash, so upgrading does not invalidate artifacts that did not use them.
    added_later: ClassVar[dict[str, Any]] = {}

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if not (name in self.added_later and value == self.added_later[name]):
                yield name, value

    def key_dump(self) -> dict[str, Any]:
        """`model_dump(mode="json")` without the `added_later` fields at their default, at any depth."""
        data = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in self.added_later and value == self.added_later[name]:
                data.pop(name, None)
            elif isinstance(value, StrictConfig):
                data[name] = value.key_dump()
            elif isinstance(value, list) and value and all(isinstance(v, StrictConfig) for v in value):
                data[name] = [v.key_dump() for v in value]
        return data

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        """Name every unknown key of this level with the closest valid one."""
        if isinstance(data, dict):
            unknown = [str(key) for key in data if key not in cls.model_fields]
            if unknown:
                message = "; ".join(unknown_key_message(key, cls.model_fields) for key in unknown)
                raise PydanticCustomError("unknown_key", "{message}", {"message": message})
        return data
