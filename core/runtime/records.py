"""Verification records: ``verifications.json`` in a bundle, one record per ``eegsine-verify`` (or export) run.

A record holds the host's ISA class, the figures and gates of that run and the sha256 of every file it judged;
:class:`eegsine.runtime.Bundle` reads them to know on which ISA classes its INT8 files were proven. Appends are
atomic and under a lock (:func:`eegsine.locks.locked`), so concurrent verifies all land; a file of another
or a newer format is refused, never rewritten.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from eegsine.errors import UserError
from eegsine.io import read_json, write_json
from eegsine.locks import locked

RECORDS = "verifications.json"
RECORDS_FORMAT = "eegsine-verifications"
RECORDS_VERSION = 1


def _check_record(path: Path, i: int, r: Any) -> None:
    """The fields the runtime, ``eegsine export`` and the bench read of a record."""
    where = f"{path}: records[{i}]"
    if not isinstance(r, dict):
        raise UserError(f"{where} must be an object, got {type(r).__name__}")
    host, files, gates = r.get("host"), r.get("files"), r.get("gates")
    for ok, what in ((isinstance(r.get("passed"), bool), "passed must be true or false"),
                     (isinstance(host, dict) and isinstance(host.get("isa_class"), str),
                      "host must be an object with an isa_class string"),
                     (isinstance(files, dict) and all(isinstance(v, str) for v in files.values()),
                      "files must map file -> sha256 string"),
                     ("passed_files" not in r or (isinstance(r["passed_files"], dict) and all(
                         isinstance(v, str) for v in r["passed_files"].values())),
                      "passed_files must map file -> sha256 string"),
                     (isinstance(gates, list) and all(isinstance(g, dict) and isinstance(g.get("gate"), str)
                                                      and isinstance(g.get("passed"), bool) for g in gates),
                      "gates must be a list of {gate, passed, ...} objects")):
        if not ok:
            raise UserError(f"{where}.{what}")


def load_records(bundle_dir: str | Path) -> list[dict[str, Any]]:
    """The bundle's verification records ([] without a file); a file of another or a newer format is refused."""
    path = Path(bundle_dir) / RECORDS
    if not path.exists():
        return []
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise UserError(f"{path}: not an eegsine verification file (expected {{'records': [...]}})")
    if data.get("format") != RECORDS_FORMAT:
        raise UserError(f"{path}: format {data.get('format')!r} is not {RECORDS_FORMAT!r}")
    version = data.get("version", 1)  # files written before the version key are version 1
    if type(version) is not int or not 1 <= version <= RECORDS_VERSION:
        raise UserError(f"{path}: verification records version {version!r} is not supported (this eegsine reads "
                        f"{RECORDS_VERSION}); nothing was changed: use the eegsine that wrote it")
    for i, r in enumerate(data["records"]):
        _check_record(path, i, r)
    return data["records"]


def append_record(bundle_dir: str | Path, record: dict[str, Any]) -> Path:
    """Append ``record`` to ``verifications.json``: read, extend and atomically replace it under the bundle's
    records lock, so every one of concurrent verifies lands (without it 3 of 9 were lost)."""
    path = Path(bundle_dir) / RECORDS
    with locked(path.with_name(f".{RECORDS}.lock")):
        records = load_records(bundle_dir)
        records.append(record)
        return write_json(path, {"format": RECORDS_FORMAT, "version": RECORDS_VERSION, "records": records})


def record_backend(r: dict[str, Any]) -> str:
    """The backend a record's figures were measured with: records written before OpenVINO ran are ORT's."""
    return str(r.get("backend", "ort"))


def proven_classes(records: list[dict[str, Any]], sha256: str, backend: str = "ort") -> set[str]:
    """ISA classes where a record proved the file with this sha256 on ``backend``: its model's gates passed
    there (``passed_files``); a record written before per-model proof counts only where all its gates passed.
    A file proven on ORT is not proven on OpenVINO (its INT8 kernels are other code: one gave 3.6 dB on the test
    suite's transformer encoder), nor the other way round; a tune record proves nothing."""
    def proved(r: dict[str, Any]) -> bool:
        if record_backend(r) != backend or r.get("kind") == "tune":
            return False
        if "passed_files" in r:
            return sha256 in r["passed_files"].values()
        return bool(r.get("passed")) and sha256 in r.get("files", {}).values()

    return {r["host"]["isa_class"] for r in records if isinstance(r.get("host"), dict) and proved(r)}
