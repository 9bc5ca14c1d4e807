"""The base of every config model: an unknown key is an error that names it and suggests a fix.

A leaf module (it imports only pydantic), so `data/`, `model/` and the pipeline config can all
build on it without importing one another. The check runs wherever a config is validated: YAML
presets, `-s` overrides and Prefect flow parameters alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def unknown_key_message(key: str, valid: Iterable[str]) -> str:
    """`unknown key 'x'; did you mean 'y'?`, or the valid keys when none is close."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key {key!r}; {hint}"


class StrictConfig(BaseModel):
    """A config model whose unknown fields are errors (a typo never passes silently).

    `extra="forbid"` also marks the JSON schema `additionalProperties: false`, so a Prefect
    server refuses such parameters when a run is created.
    """

    model_config = ConfigDict(extra="forbid")

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
