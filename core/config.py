"""Config dataclasses: one per model or stage, saved as ``config.json`` beside the weights.

Every config subclasses :class:`Config`. ``save(dir)`` / ``load(dir)`` round-trip exactly,
carry a ``kind`` and ``version`` (a file without them is refused, never guessed), and reject
unknown keys, wrong types and non-finite floats with a message naming the key; each class's
``validate()`` checks its ranges. :func:`check_value` is the same typed check for loader
options, and :func:`read_config_fields` reads a few checked fields of a later layer's file.
:func:`check_threads` bounds a thread count by the CPUs this process may use (:func:`usable_cpus`):
every config's ``threads`` field, ``--threads`` and the runtime's ``threads=`` go through it.
:func:`add_config_args` / :func:`config_from_args` map CLI flags 1:1 onto the fields
(``field_name`` -> ``--field-name``), so ``--help`` documents every field: a field's
``metadata={"help": ...}`` is its help text, ``"metavar"`` its placeholder (else its type's
name: INT, FLOAT, STR), ``"required": True`` makes the flag required (argparse says so in the usage line).

Hand-written: no library offers strict, typed, versioned JSON configs without pulling in
pydantic-style machinery, and the surface here is ~250 lines.
"""
from __future__ import annotations

import argparse
import collections.abc
import contextvars
import dataclasses
import json
import math
import numbers
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

from eegsine.errors import UserError
from eegsine.io import atomic_write_text, read_json

C = TypeVar("C", bound="Config")
CONFIG_FILE = "config.json"


def _type_name(tp: Any) -> str:
    """``int``, ``float | None``, ``list of float``, ``one of ['a', 'b']``: how an error message names a type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return f"one of {list(typing.get_args(tp))}"
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def check_value(where: str, tp: Any, value: Any, finite: bool = True) -> Any:
    """Return ``value`` coerced to ``tp`` or raise a one-line :class:`UserError` starting with ``where``.

    The one typed check behind config fields and loader options: ``bool`` is never an ``int``, an
    ``int`` is accepted for a ``float``, floats must be finite unless ``finite=False``, a
    ``Literal`` names its choices, a list is checked item by item, a nested :class:`Config` is
    built from its dict, and any other class is an ``isinstance`` check (``os.PathLike``, ``dict``).
    """
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
                return check_value(where, a, value, finite)
            except UserError as e:
                errors.append(str(e))
        if len(errors) == 1:  # Optional[X]: X's own message says more ("must be finite", a nested key)
            raise UserError(errors[0])
        raise UserError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        if isinstance(value, bool) or value not in typing.get_args(tp):
            raise UserError(f"{where}: expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        items = [check_value(where, inner, v, finite) for v in value]
        return tuple(items) if origin is tuple or (origin is not list and isinstance(value, tuple)) else items
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        value = float(value)
        if finite and not math.isfinite(value):
            raise UserError(f"{where}: must be a finite number, got {value}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object, got {value!r}")
        return tp.from_dict(value)
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise UserError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    raise UserError(f"{where}: unsupported type {_type_name(tp)}")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets) where the OS has one, else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


# A config read back from a file (a run folder on another machine, a committed result) was bounded by the CPUs of
# the host that wrote it: it is read with this host-independent cap, and the command that runs again applies its
# own, checked --threads. contextvars, not a global: two threads loading configs do not see each other's flag.
STORED_THREADS_CAP = 4096
_READING_FILE: contextvars.ContextVar[bool] = contextvars.ContextVar("eegsine_reading_config_file", default=False)


def check_threads(value: Any, where: str, lo: int = 1, cpus: int | None = None) -> int:
    """A thread count, typed and bounded by :func:`usable_cpus`, or a one-line :class:`UserError` naming ``where``.

    The one check behind ``--threads``, every config's ``threads`` field and the runtime's ``threads=``:
    OpenMP and ONNX Runtime allocate per thread, so ``10**6`` segfaults or fills memory long before it
    says why. ``lo=0`` where 0 means "the library's default". A numpy integer is an int; bool is not.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{where}: expected an int thread count, got {type(value).__name__} {value!r}")
    if value < lo:
        raise UserError(f"{where} must be >= {lo}, got {value}")
    n = usable_cpus() if cpus is None else cpus
    if value > n:
        raise UserError(f"{where} {value}: this process may use {n} CPU{'s' if n != 1 else ''}; give 1..{n}"
                        + (" (or 0: the default)" if lo == 0 else ""))
    return int(value)


def threads_type(text: str) -> int:
    """``type=`` for a script's ``--threads``: an int bounded by :func:`check_threads`, as argparse's one-line error."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int thread count, got {text!r}") from None
    try:
        return check_threads(n, "--threads")
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check_value(cls_name: str, key: str, tp: Any, value: Any, finite: bool = True) -> Any:
    """:func:`check_value` for the field ``key`` of config class ``cls_name``."""
    return check_value(f"{cls_name}.{key}", tp, value, finite)


def read_config_fields(path: str | Path, kinds: dict[str, int], fields: dict[str, Any]) -> dict[str, Any]:
    """Header and a few typed fields of a config file whose class lives in a later layer.

    ``kinds`` maps each accepted ``kind`` to the ``version`` this eegsine reads; ``fields`` maps
    field name -> type. Returns the fields present, checked like :class:`Config` fields (absent
    ones are left out); the caller checks ranges. Export and bench read training runs this way
    without importing :mod:`eegsine.training`; the CLIs validate the whole file with its class.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    data = _read_json_object(path)
    kind, version = _check_header(path, data, kinds)
    out: dict[str, Any] = {"kind": kind, "version": version}
    for name, tp in fields.items():
        if name in data:
            sub = _config_class(tp)
            if sub is not None and isinstance(data[name], dict):
                _require_headers(path, sub, data[name], name)
            out[name] = check_value(f"{path}: {kind}.{name}", tp, data[name])
    return out


def _read_json_object(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path}: config file does not exist")
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_header(path: Path, data: dict[str, Any], kinds: dict[str, int]) -> tuple[str, int]:
    """A config file names its ``kind`` and ``version``: a missing one is never guessed."""
    want = ", ".join(f"kind {k!r} version {v}" for k, v in kinds.items())
    for key in ("kind", "version"):
        if key not in data:
            raise UserError(f"{path}: no {key!r} key (a config file carries kind and version; expected {want})")
    kind, version = data["kind"], data["version"]
    if kind not in kinds:
        raise UserError(f"{path}: config is of kind {kind!r}, expected {' or '.join(map(repr, kinds))}")
    if type(version) is not int or version != kinds[kind]:  # 1.0 and True are not version 1
        raise UserError(f"{path}: {kind} config version {version!r} is not supported "
                        f"(this eegsine reads {kinds[kind]})")
    return kind, version


def _config_class(tp: Any) -> type[Config] | None:
    """The :class:`Config` subclass a field of type ``tp`` holds (``X`` or ``X | None``), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [c for c in map(_config_class, typing.get_args(tp)) if c is not None]
        return found[0] if len(found) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, Config) else None


def _require_headers(path: Path, cls: type[Config], data: dict[str, Any], where: str = "",
                     nested: bool = True) -> None:
    """``kind`` and ``version`` at every level of a config file (``nested``: in its nested configs too): never
    guessed, as :meth:`Config.from_dict` does for a dict built in Python."""
    for key in ("kind", "version"):
        if key not in data:
            raise UserError(f"{path}: {where + ' has ' if where else ''}no {key!r} key (a config file carries kind "
                            f"and version at every level; expected kind {cls.KIND!r} version {cls.VERSION})")
    if not nested:
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sub = _config_class(hints[f.name])
        if sub is not None and isinstance(data.get(f.name), dict):
            _require_headers(path, sub, data[f.name], f"{where}.{f.name}" if where else f.name)


@dataclasses.dataclass
class Config:
    """Base of every eegsine config. Subclasses set ``VERSION`` and declare typed fields."""

    VERSION: ClassVar[int] = 1
    KIND: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            finite = not f.metadata.get("nonfinite", False)  # a field that means inf/nan says so in its metadata
            setattr(self, f.name, _check_value(type(self).__name__, f.name, hints[f.name], getattr(self, f.name),
                                               finite))
        seed = getattr(self, "seed", 0)  # one rule for every config with a seed (already checked to be an int)
        if seed < 0:
            raise UserError(f"{type(self).__name__}.seed: must be >= 0 (numpy's default_rng refuses negative seeds), "
                            f"got {seed}")
        self.validate()
        fields = {f.name: f for f in dataclasses.fields(self)}
        if "threads" in fields and self.threads is not None:  # one bound for every config with a thread count
            check_threads(self.threads, f"{type(self).__name__}.threads", lo=0 if fields["threads"].default == 0 else 1,
                          cpus=STORED_THREADS_CAP if _READING_FILE.get() else None)

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
        if type(version) is not int or version != cls.VERSION:  # 1.0 and True are not version 1
            raise UserError(f"{cls.__name__}: config version {version!r} is not supported "
                            f"(this eegsine reads {cls.VERSION})")
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
        """Read a config file: ``kind`` and ``version`` must be there at every level (never guessed), then
        :meth:`from_dict`."""
        path = Path(directory)
        if path.is_dir():
            path = path / name
        data = _read_json_object(path)
        _require_headers(path, cls, data, nested=False)
        token = _READING_FILE.set(True)
        try:
            cfg = cls.from_dict(data)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        finally:
            _READING_FILE.reset(token)
        _require_headers(path, cls, data)  # the nested configs' too, once their values are known to be right
        return cfg


# -- argparse mapping ------------------------------------------------------------------
_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` text.

    Sphinx roles and RST literals become plain (``:class:`~a.B``` -> ``B``).
    """
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), doc or "")
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_args(parser: argparse.ArgumentParser, cls: type[Config], prefix: str = "",
                    skip: tuple[str, ...] = (), enforce_required: bool = True) -> None:
    """Add one flag per field of ``cls`` (nested configs get ``--<field>-<sub>`` flags).

    ``skip`` names fields (a nested one by its dest, ``quant__target``) whose flag the command adds itself;
    ``enforce_required=False`` for flags applied over a config that already has its values (``--stage-args``).
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({cls.KIND})")
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        dest = prefix + f.name
        if f.name in skip or dest in skip:
            continue
        if isinstance(tp, type) and issubclass(tp, Config):
            add_config_args(parser, tp, prefix=dest + "__", skip=skip, enforce_required=enforce_required)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_ = _field_help(f.metadata, default)
        required = enforce_required and bool(f.metadata.get("required", False))  # argparse lists it as required
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
            group.add_argument(flag, dest=dest, nargs="*", type=_parse_bool if inner is bool else inner, default=None,
                               metavar=f.metadata.get("metavar", _metavar(inner)), help=help_)
        else:
            group.add_argument(flag, dest=dest, type=tp, default=None, metavar=f.metadata.get("metavar", _metavar(tp)),
                               required=required, help=help_)


def _field_help(meta: Any, default: Any) -> str:
    """A field's help with its default appended, unless the help states its own default or the field is required."""
    text = meta.get("help", "")
    if not meta.get("required", False) and "(default" not in text:
        text += f" (default: {default!r})"
    return text.strip().replace("%", "%%")


def _metavar(tp: Any) -> str:
    """``--lr FLOAT``, ``--epochs INT``: the type's name, not argparse's ``MODEL__NUM_TRAIN_TIMESTEPS``."""
    return getattr(tp, "__name__", "VALUE").upper()


def _parse_bool(text: str) -> bool:
    """A list-of-bool flag's items (``--model-unet-cross-attention true false``); ``bool("False")`` is True."""
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(cls: type[C], ns: Any, base: C | None = None, prefix: str = "") -> C:
    """Build ``cls`` from parsed flags (argparse's result: one attribute per flag); flags left unset keep
    ``base``'s (or the default) value."""
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


def config_to_argv(cfg: Config, base: Config | None = None, prefix: str = "", skip: tuple[str, ...] = (),
                   keep: tuple[str, ...] = ()) -> list[str]:
    """The flags that :func:`config_from_args` (on a parser built by :func:`add_config_args` with the same
    ``prefix``) reads back into ``cfg`` when it starts from ``base`` (None: the class defaults).

    Only the fields that differ from ``base`` are written (plus those named in ``keep``), so a preset's
    command line is ``--preset NAME`` and what was changed. A value no flag can express (None over a set
    value) is a :class:`UserError`: the command line would not reproduce the config.
    """
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        if f.name in skip:
            continue
        value, dest = getattr(cfg, f.name), prefix + f.name
        ref = getattr(base, f.name) if base is not None else _field_default(f)
        if isinstance(value, Config):
            out += config_to_argv(value, ref if isinstance(ref, Config) else None, prefix=dest + "__")
            continue
        if value == ref and f.name not in keep:
            continue
        flag = _flag(dest.replace("__", "-"))
        if value is None:
            raise UserError(f"{type(cfg).__name__}.{f.name}: None cannot be set by a flag over {ref!r}; start from "
                            "a config where it is None")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            out += [flag, *(_argv_item(v) for v in value)]
        else:
            text = _argv_item(value)
            out += [f"{flag}={text}"] if text.startswith("-") else [flag, text]  # "-1": a value, not a flag
    return out


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _argv_item(value: Any) -> str:
    """One value as its flag reads it back: floats exactly (``4`` for 4.0, else repr), true/false for bools."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)
    return str(value)


class _RaisingParser(argparse.ArgumentParser):
    """A parser whose errors are one-line :class:`UserError` s instead of exiting the process."""

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{self.prog}: {message}")


def parse_config_args(args: Sequence[str], configs: dict[str, Config], where: str) -> dict[str, Config]:
    """``args`` (flags of :func:`add_config_args`) applied over ``configs`` (prefix -> config): the same flags, help
    and types as the command whose configs they are, without that command's other flags. A flag none of the
    configs has is a one-line :class:`UserError` naming ``where``."""
    parser = _RaisingParser(prog=where, add_help=False)
    for prefix, cfg in configs.items():
        add_config_args(parser, type(cfg), prefix=prefix, enforce_required=False)  # the configs hold them already
    ns, unknown = parser.parse_known_args(list(args))
    if unknown:
        names = ", ".join(type(c).__name__ for c in configs.values())
        raise UserError(f"{where}: {' '.join(unknown)}: not a flag of {names}")
    return {prefix: config_from_args(type(cfg), ns, base=cfg, prefix=prefix) for prefix, cfg in configs.items()}


T = TypeVar("T")


class Presets(collections.abc.Mapping, typing.Generic[T]):
    """One stage's named presets: name -> a function returning a fresh typed config (or a dict of configs).

    A mapping of name -> config (built anew on each lookup: configs are mutable); iterating gives the names,
    so a table is an argparse ``choices=``. An unknown name is a one-line :class:`UserError` naming the stage.
    """

    def __init__(self, stage: str, factories: dict[str, Callable[[], T]]) -> None:
        self.stage = stage
        self._factories = dict(factories)

    def __getitem__(self, name: str) -> T:
        if name not in self._factories:
            raise UserError(f"unknown {self.stage} preset {name!r} (known: {', '.join(self._factories)})")
        return self._factories[name]()

    def __call__(self, name: str) -> T:
        return self[name]

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's contract: a missing name gives the default
        return self[name] if name in self._factories else default

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Presets({self.stage!r}: {', '.join(self._factories)})"
