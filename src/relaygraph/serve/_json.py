"""Making state values JSON-ready for responses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi.encoders import jsonable_encoder


def to_json(value: Any) -> Any:
    """State values as JSON data (messages and contracts become dicts, decimals strings)."""
    return jsonable_encoder(value, custom_encoder={Decimal: str, bytes: lambda b: b.hex()})


def json_default(obj: Any) -> Any:
    """``default=`` for orjson/json: pydantic models, decimals and sets."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")
