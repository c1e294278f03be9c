"""Typed node parameters: declare a dataclass's fields as ROS parameters; applied or refused, never ignored.

Each field becomes a parameter with the field's default and ``metadata['help']`` as its
description. A parameter is either *dynamic* -- listed in ``dynamic``: a runtime change
(``ros2 param set``, rclpy's ``set_parameters`` service) is validated by the dataclass's
``__post_init__`` and then handed to ``on_change``, which applies it -- or *read-only*: it is
declared with ``read_only=True`` and rclpy refuses a change with the reason
"Trying to set a read-only parameter". Start-up overrides (YAML, ``-p``) apply to both.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

T = TypeVar("T")


def declare_config(node, config_cls: type[T], *, dynamic: tuple[str, ...] = (),
                   on_change: Optional[Callable[[T], None]] = None) -> T:
    """Declare every field of ``config_cls`` on ``node`` and return the validated config.

    Fields named in ``dynamic`` may change at runtime: ``on_change(new_config)`` is called with the
    validated config and must apply it. Every other field is read-only.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(dynamic) - names
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no fields {sorted(unknown)}")
    if dynamic and on_change is None:
        raise ValueError("dynamic parameters need an on_change callback that applies them")
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):
            default = list(default)
        help_text = f.metadata.get("help", "")
        node.declare_parameter(f.name, default, ParameterDescriptor(
            description=help_text if f.name in dynamic else f"{help_text} (read-only: set at start-up)".strip(),
            read_only=f.name not in dynamic))
    config = config_from_node(node, config_cls)

    def _validate(params) -> SetParametersResult:
        current = dataclasses.asdict(config_from_node(node, config_cls))
        for p in params:
            if p.name in names:
                if p.name not in dynamic:  # rclpy refuses read-only ones before we are called; belt and braces
                    return SetParametersResult(successful=False, reason=f"{p.name} is read-only")
                current[p.name] = p.value
        try:
            new = config_cls(**_coerce(config_cls, current))
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if on_change is not None and any(p.name in names for p in params):
            try:
                on_change(new)
            except (ValueError, TypeError, RuntimeError) as exc:
                return SetParametersResult(successful=False, reason=f"cannot apply: {exc}")
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
