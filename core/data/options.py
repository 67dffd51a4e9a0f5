"""Typed loader options: every data set declares one :class:`DataOptions` dataclass in its registry entry.

A data set's options are a :class:`~eegsine.config.Config` (typed fields with defaults and help, checked
when built; ``validate()`` checks ranges before a sample is loaded or generated). Strings exist only at
the edges: :func:`parse_pairs` reads ``-o KEY=VALUE`` (a JSON value, else a bare string) against the
dataclass. Library calls pass the dataclass, or a dict of the same keys: run configs and model provenance
saved before the dataclasses existed hold dicts, and :meth:`DataOptions.from_values` reads them unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from eegsine.config import Config, check_value
from eegsine.errors import UserError

Opts = TypeVar("Opts", bound="DataOptions")
# a bare word an older run config wrote for "no band-pass" (eegcvpr40 took "none", "off", "raw"; synthetic-vep "none")
_NONE_WORDS = ("none", "null", "off", "raw")


def _allows(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


@dataclasses.dataclass
class DataOptions(Config):
    """Base of a data set's loader options (a data set without options declares this class itself)."""

    KIND = "data-options"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, allowed = getattr(self, f.name), _allows(hints[f.name])
            if isinstance(value, os.PathLike):  # a folder given as a Path: stored as text (provenance is JSON)
                setattr(self, f.name, os.fspath(value))
            elif (isinstance(value, str) and value.strip().lower() in _NONE_WORDS and type(None) in allowed
                  and str not in allowed):
                setattr(self, f.name, None)
        super().__post_init__()

    def kwargs(self) -> dict[str, Any]:
        """The loader's keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults (JSON values: what a bundle's provenance records)."""
        default = type(self)()
        return {k: v for k, v in self.to_dict().items() if k not in ("kind", "version") and v != getattr(default, k)}

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_values(cls: type[Opts], name: str, values: Mapping[str, Any]) -> Opts:
        """Build from a dict (a stored config's, a provenance's, keyword arguments): an unknown key or a value of
        the wrong type is one line naming the data set, the key and the valid keys."""
        hints = typing.get_type_hints(cls)
        known = cls.keys()
        for key, value in values.items():
            if key not in known:
                raise UserError(f"{name}: unknown option {key!r} (options: {', '.join(known) or 'none'})")
            if isinstance(value, os.PathLike) or (isinstance(value, str) and type(None) in _allows(hints[key])):
                continue  # __post_init__ turns these into text / None first
            check_value(f"{name}: option {key!r}", hints[key], value)
        try:
            return cls(**values)
        except UserError as e:  # a range (validate()): "Class.field must be ..." -> "name: option 'field': must be"
            m = re.match(r"^\w+\.(\w+):? (.*)$", str(e))
            if m and m.group(1) in known:
                raise UserError(f"{name}: option {m.group(1)!r}: {m.group(2)}") from None
            raise UserError(f"{name}: {e}") from None

    @classmethod
    def help_rows(cls) -> list[tuple[str, str, str, str]]:
        """(key, type, default, help) of every option: what ``eegsine data info`` and ``--help`` list."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            # f.type is the annotation as written (postponed annotations): "list[float] | None", not typing's repr
            rows.append((f.name, str(f.type), json.dumps(default), f.metadata.get("help", "")))
        return rows


def parse_pairs(name: str, cls: type[DataOptions], pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``-o``, a run config's ``data_options``) -> typed values of the keys given.

    A value is JSON where it parses (``n_chans=32``, ``bandpass=[5,95]``, ``progress=false``), else the bare
    text (``image_set=digits``); ``-`` in a key reads as ``_``. Each is checked against ``cls``'s field.
    """
    known = cls.keys()
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for kv in pairs:
        key, sep, text = kv.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"{name}: option {kv!r}: expected KEY=VALUE (options: {', '.join(known)})")
        if key not in known:
            raise UserError(f"{name}: unknown option {key!r} (options: {', '.join(known) or 'none'})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if str in _allows(hints[key]) and not isinstance(value, str) and value is not None:
            value = text  # a name that reads as JSON (image_set=1) is still a name
        try:
            check_value(f"{name}: option {key!r}", hints[key], value)
        except UserError as e:
            if not (isinstance(value, str) and value.strip().lower() in _NONE_WORDS
                    and type(None) in _allows(hints[key])):
                raise UserError(f"{e} (options: {', '.join(known)})") from None
        out[key] = value
    return out
