"""Dataclass ↔ table entity conversion shared by the repositories."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from shared.storage.base import Entity

T = TypeVar("T")


def to_entity(obj: Any, *, pk: str, rk: str, skip: tuple[str, ...] = ("etag",)) -> dict[str, Any]:
    out: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = "\x1f".join(value)
        out[f.name] = value
    return out


def _resolve(tp: Any) -> Any:
    """The concrete class of a field type (drop ``| None``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def from_entity(cls: type[T], entity: Entity, **extra: Any) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in extra or f.name not in entity:
            continue
        value = entity[f.name]
        target = _resolve(hints[f.name])
        if isinstance(target, type) and issubclass(target, Enum):
            value = target(value)
        elif target is tuple or typing.get_origin(target) is tuple:
            value = tuple(v for v in str(value).split("\x1f") if v)
        elif target is datetime and isinstance(value, str):
            value = datetime.fromisoformat(value)
        kwargs[f.name] = value
    kwargs.update(extra)
    return cls(**kwargs)
