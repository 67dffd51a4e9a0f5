"""Config dataclasses: exact round trip, strict keys and types, CLI flag mapping."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Literal

import pytest

from eegsine.config import Config, add_config_args, config_from_args
from eegsine.errors import UserError


@dataclasses.dataclass
class Inner(Config):
    KIND = "inner"
    depth: int = 2
    names: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])


@dataclasses.dataclass
class Outer(Config):
    KIND = "outer"
    VERSION = 3
    lr: float = 1e-3
    steps: int = 10
    use_ema: bool = False
    mode: Literal["full", "lora"] = "full"
    band: tuple[float, ...] | None = (5.0, 95.0)
    note: str = ""
    inner: Inner = dataclasses.field(default_factory=Inner)

    def validate(self) -> None:
        if self.steps < 1:
            raise UserError(f"Outer.steps must be >= 1, got {self.steps}")


def test_round_trip_exact(tmp_path):
    cfg = Outer(lr=0.5, steps=7, use_ema=True, mode="lora", band=None, note="x", inner=Inner(depth=5, names=["z"]))
    cfg.save(tmp_path)
    back = Outer.load(tmp_path)
    assert back == cfg
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["version"] == 3 and data["kind"] == "outer" and data["inner"]["depth"] == 5


def test_int_accepted_for_float_but_not_bool_for_int():
    assert Outer(lr=1).lr == 1.0 and isinstance(Outer(lr=1).lr, float)
    with pytest.raises(UserError, match=r"Outer\.steps: expected int"):
        Outer(steps=True)


@pytest.mark.parametrize("patch, message", [
    ({"stepz": 3}, r"unknown key 'stepz'"),
    ({"steps": "ten"}, r"Outer\.steps: expected int, got str"),
    ({"mode": "qlora"}, r"Outer\.mode: expected one of \['full', 'lora'\]"),
    ({"inner": {"depth": 1, "colour": 2}}, r"unknown key 'colour'"),
    ({"inner": {"names": "ab"}}, r"Inner\.names: expected a list"),
    ({"version": 2}, r"config version 2 is not supported"),
    ({"kind": "inner"}, r"kind 'inner', expected 'outer'"),
    ({"steps": 0}, r"Outer\.steps must be >= 1"),
])
def test_bad_config_files_name_the_key(tmp_path, patch, message):
    data = Outer().to_dict()
    data.update(patch)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as info:
        Outer.load(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Outer.load(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        Outer.load(tmp_path / "nowhere")


def test_cli_flags_map_one_to_one():
    p = argparse.ArgumentParser()
    add_config_args(p, Outer)
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == {"--lr", "--steps", "--use-ema", "--mode", "--band", "--note", "--inner-depth", "--inner-names"}
    ns = p.parse_args(["--lr", "0.1", "--use-ema", "--mode", "lora", "--inner-depth", "4", "--band", "1", "40"])
    cfg = config_from_args(Outer, ns)
    assert cfg == Outer(lr=0.1, use_ema=True, mode="lora", band=(1.0, 40.0), inner=Inner(depth=4))
    # unset flags keep the base's values
    base = Outer(steps=99, note="keep")
    cfg2 = config_from_args(Outer, p.parse_args(["--no-use-ema"]), base=base)
    assert cfg2.steps == 99 and cfg2.note == "keep" and cfg2.use_ema is False
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "qlora"])
