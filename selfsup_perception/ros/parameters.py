"""Typed node parameters: declare a dataclass's fields as ROS parameters, validate on change.

Each field becomes a parameter with the field's default and ``metadata['help']`` as its
description. The dataclass's ``__post_init__`` validates (raising ``ValueError``); the same
validation guards runtime changes through a set-parameters callback, which rejects a bad
value with the error's message instead of letting the node run with it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

T = TypeVar("T")


def declare_config(node, config_cls: type[T], *, on_change: Optional[Callable[[T], None]] = None,
                   read_only: tuple[str, ...] = ()) -> T:
    """Declare every field of ``config_cls`` on ``node`` and return the validated config."""
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):
            default = list(default)
        node.declare_parameter(f.name, default, ParameterDescriptor(
            description=f.metadata.get("help", ""), read_only=f.name in read_only))
    config = config_from_node(node, config_cls)

    def _validate(params) -> SetParametersResult:
        names = {f.name for f in dataclasses.fields(config_cls)}
        current = dataclasses.asdict(config_from_node(node, config_cls))
        for p in params:
            if p.name in names:
                current[p.name] = p.value
        try:
            new = config_cls(**_coerce(config_cls, current))
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if on_change is not None:
            on_change(new)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_validate)
    return config


def _coerce(config_cls, values: dict) -> dict:
    out = {}
    for f in dataclasses.fields(config_cls):
        v = values[f.name]
        if isinstance(v, list) and "tuple" in str(f.type):
            v = tuple(v)
        if f.type in ("float", float) and isinstance(v, int):
            v = float(v)
        out[f.name] = v
    return out


def config_from_node(node, config_cls: type[T]) -> T:
    values = {f.name: node.get_parameter(f.name).value for f in dataclasses.fields(config_cls)}
    return config_cls(**_coerce(config_cls, values))


def field_with_help(default, help: str, **kwargs):  # noqa: A002 - reads well at call sites
    """A dataclass field with a description for its ROS parameter."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)
