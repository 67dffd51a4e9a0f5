"""Config dataclasses: one per model or stage, saved as ``config.json`` beside the weights.

Every config subclasses :class:`Config`. ``save(dir)`` / ``load(dir)`` round-trip exactly,
carry a ``version``, and reject unknown keys or wrong types with a message naming the key.
:func:`add_config_args` / :func:`config_from_args` map CLI flags 1:1 onto the fields
(``field_name`` -> ``--field-name``), so ``--help`` documents every field.

Hand-written: no library offers strict, typed, versioned JSON configs without pulling in
pydantic-style machinery, and the surface here is ~150 lines.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from eegsine.errors import UserError
from eegsine.io import atomic_write_text

C = TypeVar("C", bound="Config")
CONFIG_FILE = "config.json"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(cls_name: str, key: str, tp: Any, value: Any) -> Any:
    """Return ``value`` coerced to ``tp`` or raise a :class:`UserError` naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(cls_name, key, a, value)
            except UserError as e:
                errors.append(str(e))
        raise UserError(f"{cls_name}.{key}: expected {tp}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{cls_name}.{key}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{cls_name}.{key}: expected a list, got {type(value).__name__} {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        items = [_check_value(cls_name, key, inner, v) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{cls_name}.{key}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{cls_name}.{key}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{cls_name}.{key}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{cls_name}.{key}: expected str, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{cls_name}.{key}: expected an object, got {value!r}")
        return tp.from_dict(value)
    raise UserError(f"{cls_name}.{key}: unsupported type {_type_name(tp)}")


@dataclasses.dataclass
class Config:
    """Base of every eegsine config. Subclasses set ``VERSION`` and declare typed fields."""

    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_value(type(self).__name__, f.name, hints[f.name], getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Override to check ranges; raise :class:`UserError` naming the field."""

    # -- dict / json -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.KIND, "version": self.VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Config) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise UserError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        kind = data.pop("kind", cls.KIND)
        version = data.pop("version", cls.VERSION)
        if kind != cls.KIND:
            raise UserError(f"{cls.__name__}: config is of kind {kind!r}, expected {cls.KIND!r}")
        if version != cls.VERSION:
            raise UserError(f"{cls.__name__}: config version {version!r} is not supported (this eegsine reads {cls.VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{cls.__name__}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        return cls(**data)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def save(self, directory: str | Path, name: str = CONFIG_FILE) -> Path:
        path = Path(directory) / name
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls: type[C], directory: str | Path, name: str = CONFIG_FILE) -> C:
        path = Path(directory)
        if path.is_dir():
            path = path / name
        if not path.exists():
            raise UserError(f"{path}: config file does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None


# -- argparse mapping ------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls: type[Config], prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls`` (nested configs get ``--<field>-<sub>`` flags)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({cls.KIND})")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        dest = prefix + f.name
        if isinstance(tp, type) and issubclass(tp, Config):
            add_config_args(parser, tp, prefix=dest + "__")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_ = (f.metadata.get("help", "") + f" (default: {default!r})").strip()
        flag = _flag(dest.replace("__", "-"))
        if typing.get_origin(tp) in (typing.Union, types.UnionType):  # Optional[X] -> X
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif origin is typing.Literal:
            group.add_argument(flag, dest=dest, choices=list(args), default=None, help=help_)
        elif origin in (list, tuple):
            inner = args[0] if args else str
            group.add_argument(flag, dest=dest, nargs="*", type=inner, default=None, help=help_)
        else:
            group.add_argument(flag, dest=dest, type=tp, default=None, help=help_)


def config_from_args(cls: type[C], ns: argparse.Namespace, base: C | None = None, prefix: str = "") -> C:
    """Build ``cls`` from parsed flags; flags left unset keep ``base``'s (or the default) value."""
    hints = typing.get_type_hints(cls)
    values = base.to_dict() if base is not None else {}
    values.pop("kind", None)
    values.pop("version", None)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        dest = prefix + f.name
        if isinstance(tp, type) and issubclass(tp, Config):
            sub_base = getattr(base, f.name) if base is not None else None
            values[f.name] = config_from_args(tp, ns, sub_base, prefix=dest + "__").to_dict()
            continue
        v = getattr(ns, dest, None)
        if v is not None:
            values[f.name] = list(v) if isinstance(v, tuple) else v
    return cls.from_dict(values)
