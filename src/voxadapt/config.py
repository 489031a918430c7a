"""Dataclass configs: YAML sets them, CLI flags override, everything is validated in one place."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from voxadapt.errors import ConfigError
from voxadapt.manifest import atomic_write

T = TypeVar("T")


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error if the file is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    return data


def _coerce(value: Any, annotation: Any) -> Any:
    """Convert YAML/CLI values to the field's type where the conversion is unambiguous."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        for arg in args:
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"{value!r} is not one of {args}")
    if annotation is Path:
        return Path(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{value!r} is not true/false")
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if annotation is str:
        return str(value)
    return value


def build_config(cls: type[T], yaml_path: Path | None = None, **overrides: Any) -> T:
    """Build a config dataclass from an optional YAML file plus overrides (None = not given).

    Unknown keys and values of the wrong type are collected and reported together.
    """
    values: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    problems = [f"unknown option {key!r}" for key in values if key not in names]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            continue
        try:
            kwargs[key] = _coerce(value, hints[key])
        except (TypeError, ValueError) as exc:
            problems.append(f"{key}: {exc}")
    config = None
    try:
        config = cls(**kwargs)
    except TypeError as exc:  # a required option is missing
        problems.append(str(exc).split(".__init__() ", 1)[-1])
    validate = getattr(config, "problems", None)
    if validate:
        problems.extend(validate())
    if problems or config is None:
        source = f" in {yaml_path}" if yaml_path else ""
        raise ConfigError(f"invalid configuration{source}: " + "; ".join(problems))
    return config


def to_jsonable(config: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (paths as strings) for saving beside outputs."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def save_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML (it can be passed back with --config)."""
    with atomic_write(path) as handle:
        yaml.safe_dump(to_jsonable(config), handle, allow_unicode=True, sort_keys=False)
