"""Dataclass configs: the one declaration of every option.

Each stage's options are a dataclass whose fields carry their help text (and choices, flag
name, group) in `option(...)` metadata. From that single declaration come the YAML schema
(`--config FILE.yaml`, nested sections such as `decode:`), the argparse flags
(`add_config_arguments`) and validation (`Config.problems`, run by `__post_init__`, so the
Python API, the CLI, the demo and tests are all validated before any model loads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from voxadapt.errors import ConfigError
from voxadapt.manifest import atomic_write

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str,
    default_factory: Any = _MISSING,
    choices: typing.Sequence[str] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    group: str | None = None,
    positional: bool = False,
    position: int | None = None,
    flag_prefix: str | None = None,
    shared: bool = False,
    cli: bool = True,
    repeatable: bool = False,
    model_reference: bool = False,
    invocation: bool = False,
) -> Any:
    """A config field with its CLI declaration (help, choices, flag name, argument group).

    For a nested section, `flag_prefix` prefixes its flags (train's `decode:` section gives
    `--eval-batch-size`); a `shared` field of a section keeps its plain flag (`--language`).
    A `model_reference` (a hub id or a local folder) is kept as the folder's absolute path
    when it names one, so what a run records names the same model from any directory.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "flag": flag,
        "metavar": metavar,
        "group": group,
        "positional": positional,
        "position": position,
        "flag_prefix": flag_prefix,
        "shared": shared,
        # a list flag given several times adds up (`--system A --system B`)
        "repeatable": repeatable,
        "cli": cli,
        "model_reference": model_reference,
        # how this invocation treats earlier outputs (resume, overwrite): not saved with a run
        "invocation": invocation,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Config:
    """Mixin for config dataclasses: `problems()` lists every invalid value; construction
    raises ConfigError with all of them."""

    def problems(self) -> list[str]:
        """Every invalid or conflicting value (subclasses extend this)."""
        found = []
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            choices = item.metadata.get("choices")
            value = getattr(self, item.name)
            if choices and value is not None and value not in choices:
                found.append(
                    f"{item.name} must be one of {', '.join(choices)}, not {_shown(value)}"
                )
        return found

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if item.metadata.get("model_reference") and isinstance(value, (str, Path)):
                setattr(self, item.name, model_reference(value))
        found = self.problems()
        if found:
            raise ConfigError("invalid configuration: " + "; ".join(found), found)


def looks_like_path(text: str) -> bool:
    """A model named by a path (not a hub id `namespace/name`)."""
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def model_reference(model: str | Path) -> str:
    """A hub id as written; a local folder as its absolute path (`~` expanded), so an
    adapter records a base that it finds again from any working directory."""
    text = str(model)
    path = Path(text).expanduser()
    if path.exists() or looks_like_path(text):
        return str(path.absolute() if not path.exists() else path.resolve())
    return text


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error if the file is missing or not a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    return data


# Values in messages are shortened (bounded in depth and length, so a YAML alias bomb or a
# megabyte string cannot turn one error line into megabytes).
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 60, 60
_SHORT_REPR.maxlist = _SHORT_REPR.maxdict = 4


def _shown(value: Any) -> str:
    return _SHORT_REPR.repr(value)


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
        raise ValueError(
            f"expected {' or '.join(_type_name(a) for a in args)}, got {_shown(value)}"
        )
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        items = value if isinstance(value, (list, tuple)) else [value]
        if item_type in (int, float, str):  # "0.9,1.0,1.1", "tensorboard,mlflow"
            items = [
                part
                for item in items
                for part in (item.split(",") if isinstance(item, str) else [item])
            ]
        return [_coerce(item, item_type) for item in items]
    if annotation is Path:  # every path option, from flags and files alike: `~` is home
        if isinstance(value, Path):
            return value.expanduser()
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{_shown(value)} is not a path")
        return Path(value).expanduser()
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_shown(value)}")
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {_shown(value)}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"expected an integer, got {_shown(value)}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {_shown(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {_shown(value)}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {_shown(value)}")
        return number
    if annotation is str:
        # YAML null, yes/no and mappings are not strings ("None" or "False" would be)
        if value is None or isinstance(value, (bool, dict, list)):
            raise ValueError(f"expected a string, got {_shown(value)}")
        return str(value)
    return value


def _type_name(annotation: Any) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        Path: "a path",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _unknown(key: str, fields: dict[str, dataclasses.Field], prefix: str) -> str:
    """'unknown option', with the closest key (flags map to keys: --min-duration is
    min_duration_s)."""
    import difflib

    by_flag = {_flag_of(f).removeprefix("--").replace("-", "_"): n for n, f in fields.items()}
    guess = by_flag.get(key) or next(iter(difflib.get_close_matches(key, fields, n=1)), None)
    hint = f" (did you mean {prefix + guess!r}?)" if guess else ""
    return f"unknown option {prefix + key!r}{hint}"


def _flag_of(item: dataclasses.Field) -> str:
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


def _construct(cls: type[T], values: dict[str, Any], prefix: str = "") -> tuple[T | None, list]:
    """Build `cls` from plain values; returns (config or None, every problem found)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    problems = [_unknown(key, fields, prefix) for key in values if key not in fields]
    kwargs: dict[str, Any] = {}
    for name, item in fields.items():
        if name not in values:
            if item.default is _MISSING and item.default_factory is _MISSING:
                shown = prefix + name  # a flag by the time the user reads it (_name_flags)
                if item.metadata.get("positional"):
                    metavar = item.metadata.get("metavar") or name.upper()
                    problems.append(f"{metavar} is required (or `{name}:` in --config)")
                    continue
                problems.append(f"{shown} is required")
            continue
        value, annotation = values[name], hints[name]
        if dataclasses.is_dataclass(annotation):
            if isinstance(value, annotation):
                kwargs[name] = value
                continue
            if value is None:  # a section whose keys are all commented out
                value = {}
            if not isinstance(value, dict):
                problems.append(f"{prefix + name}: expected a mapping of option: value")
                continue
            nested, nested_problems = _construct(annotation, value, f"{prefix}{name}.")
            problems.extend(nested_problems)
            if nested is not None:
                kwargs[name] = nested
            continue
        try:
            kwargs[name] = _coerce(value, annotation)
        except (TypeError, ValueError) as exc:
            problems.append(f"{prefix + name}: {exc}")
    try:  # also with problems above, to report invalid values together with them
        config = cls(**kwargs)
    except ConfigError as exc:
        return None, problems + [p if p.startswith(prefix) else prefix + p for p in exc.problems]
    except TypeError:  # a required value is missing: already reported
        return None, problems
    return (None, problems) if problems else (config, [])


def build_config(cls: type[T], yaml_path: Path | None = None, **overrides: Any) -> T:
    """Build a config dataclass from an optional YAML file plus overrides (None = not given).

    Override keys may be dotted (`decode.batch_size`) to set a nested section. Unknown keys,
    values of the wrong type and invalid values are collected and reported together.
    """
    values: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        target: Any = values
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):  # a YAML scalar where a section belongs:
                break  # reported by _construct
        else:
            target[leaf] = value
    config, problems = _construct(cls, values)
    if problems or config is None:
        source = f" in {yaml_path}" if yaml_path else ""
        problems = [_name_flags(problem, cls, keys=yaml_path is not None) for problem in problems]
        raise ConfigError(f"invalid configuration{source}: " + "; ".join(problems), problems)
    return config


def flag_names(cls: type, prefix: str = "", flag_prefix: str = "") -> dict[str, str]:
    """Every option's key (`decode.batch_size`) -> its command-line flag (`--eval-batch-size`)."""
    names: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if not item.metadata.get("cli", True) or item.metadata.get("positional"):
            continue
        if dataclasses.is_dataclass(hints[item.name]):
            section_prefix = item.metadata.get("flag_prefix") or ""
            names |= flag_names(hints[item.name], f"{prefix}{item.name}.", section_prefix)
            continue
        flag = _flag_of(item)
        if flag_prefix and not item.metadata.get("shared"):
            flag = f"--{flag_prefix}{flag.removeprefix('--')}"
        names[prefix + item.name] = flag
    return names


def _name_flags(problem: str, cls: type, *, keys: bool) -> str:
    """A problem as the user typed it: internal field names (`min_duration_s`) become flags
    (`--min-duration`), or `key (--flag)` when the values came from a YAML file. Only names
    that cannot be ordinary words are replaced: dotted or snake_case ones, or one that opens
    the message (`lr must be >= 0`)."""
    import re

    names = flag_names(cls)
    for key in sorted(names, key=len, reverse=True):
        if "_" not in key and "." not in key and not re.match(rf"{re.escape(key)}[ :]", problem):
            continue
        shown = f"{key} ({names[key]})" if keys else names[key]
        pattern = rf"(?<![\w.\-']){re.escape(key)}(?![\w'])"  # a 'quoted' key is a YAML key
        if "_" not in key and "." not in key:
            pattern = rf"^{re.escape(key)}(?=[ :])"
        problem = re.sub(pattern, lambda _, shown=shown: shown, problem)
    return problem


def to_jsonable(config: Any) -> dict[str, Any]:
    """Dataclass -> plain dict (paths as strings) for saving beside outputs."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def run_description(config: Any) -> dict[str, Any]:
    """The config as a run's record: every option but those that only say how this
    invocation treats earlier outputs (`resume`, `overwrite`), so the saved file passed back
    with --config starts the same run afresh instead of silently resuming it."""

    def describe(node: Any) -> dict[str, Any]:
        return {
            item.name: describe(value) if dataclasses.is_dataclass(value) else value
            for item in dataclasses.fields(node)
            if not item.metadata.get("invocation")
            for value in [getattr(node, item.name)]
        }

    return json.loads(json.dumps(describe(config), default=str))


def save_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML (it can be passed back with --config)."""
    with atomic_write(path) as handle:
        yaml.safe_dump(run_description(config), handle, allow_unicode=True, sort_keys=False)


# ----------------------------------------------------------------- argparse from dataclasses


def _argument_type(annotation: Any) -> tuple[Any, bool]:
    """(scalar type for argparse, whether the option takes a list)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _argument_type(args[0]) if len(args) == 1 else (str, False)
    if origin is list:
        item = typing.get_args(annotation)[0]
        # numbers stay strings: build_config splits "0.9,1.0,1.1" and checks each
        return (str if item in (int, float, str) else _argument_type(item)[0]), True
    # paths stay strings until build_config checks them (an empty --out '' is refused)
    return (str if annotation is Path else annotation), False


def _default_text(item: dataclasses.Field) -> str:
    default = item.default
    if item.default_factory is not _MISSING or default is _MISSING or default is None:
        return ""
    if default is False or default == "":
        return ""
    if default is True:
        return " (default: on)"
    return f" (default: {default})"


def _renamed_flags(help_text: str, renames: dict[str, str]) -> str:
    """Help text that names a section's flags by their prefixed names (train's decode
    section: `--bias-weight` is `--eval-bias-weight`, `--no-vad` is `--no-eval-vad`)."""
    import re

    def rename(match: re.Match) -> str:
        negated, flag = match.group(1) or "", "--" + match.group(2)
        if flag not in renames:
            return match.group(0)
        renamed = renames[flag]
        return "--no-" + renamed.removeprefix("--") if negated else renamed

    return re.sub(r"--(no-)?([a-z][a-z0-9-]*)", rename, help_text)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    prefix: str = "",
    flag_prefix: str = "",
    groups: dict[str, Any] | None = None,
) -> None:
    """Add one argument per field of `cls` (nested sections included) to `parser`.

    Flags default to None, meaning "not given", so values from --config YAML stay unless a
    flag overrides them; required options say so in their help. Argument groups are shared
    with nested sections (one "augmentation:" group, not two).
    """
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    # positionals in their declared CLI order (`prepare FORMAT SOURCE`), then the options
    fields.sort(key=lambda f: (not f.metadata.get("positional"), f.metadata.get("position") or 0))
    groups = {} if groups is None else groups
    renames = {
        _flag_of(item): f"--{flag_prefix}{_flag_of(item).removeprefix('--')}"
        for item in fields
        if flag_prefix and not item.metadata.get("shared")
    }
    for item in fields:
        annotation = hints[item.name]
        if dataclasses.is_dataclass(annotation):
            add_config_arguments(
                parser,
                annotation,
                prefix=f"{prefix}{item.name}.",
                flag_prefix=item.metadata.get("flag_prefix") or "",
                groups=groups,
            )
            continue
        group_name = item.metadata.get("group")
        target = parser
        if group_name:
            target = groups.get(group_name) or parser.add_argument_group(group_name)
            groups[group_name] = target
        kind, many = _argument_type(annotation)
        help_text = _renamed_flags(item.metadata["help"], renames) + _default_text(item)
        required = item.default is _MISSING and item.default_factory is _MISSING
        if required and not item.metadata.get("positional"):
            help_text += " (required)"
        kwargs: dict[str, Any] = {"help": help_text.replace("%", "%%")}
        if item.metadata.get("choices"):
            kwargs["choices"] = item.metadata["choices"]
        if item.metadata.get("metavar") or not (kind is bool or item.metadata.get("choices")):
            kwargs["metavar"] = item.metadata.get("metavar") or item.name.upper()
        if item.metadata.get("positional"):
            if item.metadata.get("choices"):
                kwargs["help"] += f": {', '.join(item.metadata['choices'])}"
            kwargs["type"] = kind
            # optional for argparse: `--config` may give it (prepare_config.yaml passed back);
            # build_config says when it is missing from both
            kwargs["nargs"] = "*" if many else "?"
            kwargs["default"] = None
            target.add_argument(prefix + item.name, **kwargs)
            continue
        flag = _flag_of(item)
        if flag_prefix and not item.metadata.get("shared"):
            flag = f"--{flag_prefix}{flag.removeprefix('--')}"
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if many:
                kwargs["nargs"] = "+"
                if item.metadata.get("repeatable"):
                    kwargs["action"] = "extend"
        target.add_argument(flag, dest=prefix + item.name, default=None, **kwargs)


def config_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of `cls`'s options given on the command line (dotted keys for sections)."""
    names = _option_names(cls)
    return {k: v for k, v in vars(args).items() if k in names and v is not None and v != []}


def _option_names(cls: type, prefix: str = "") -> set[str]:
    names = set()
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            names |= _option_names(hints[item.name], f"{prefix}{item.name}.")
        else:
            names.add(prefix + item.name)
    return names
