"""Render table.md from the verifications-<target>.json records that run.sh copied here."""
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| target | host (ISA class: int8 features) | model | INT8 SQNR vs torch, dB (worst output) | UNet: worst INT8 timestep, dB | clean acc % | transfer-PGD acc % | passed |",
        "|---|---|---|---|---|---|---|---|"]
for target in ("portable", "x86-vnni"):
    for rec in json.loads((out / f"verifications-{target}.json").read_text())["records"]:
        h = rec["host"]
        for m, f in rec["models"].items():
            i8 = f["int8"]
            v = min(x for k, x in i8.items() if k.endswith("_sqnr_db"))
            g = next((g for g in rec["gates"] if g["gate"].startswith(f"{m} int8 SQNR")), None)
            worst_t = f"{g['value']:.2f}" if "sqnr_db_per_timestep" in i8 and g else ""
            t = rec.get("classifier_task", {}) if m == "classifier" else {}
            rows.append(f"| {target} | {h['cpu']} ({h['isa_class']}: {', '.join(h['int8_features'])}) | {m} | {v:.2f} | {worst_t} | "
                        f"{t.get('int8', {}).get('clean', '')} | {t.get('int8', {}).get('transfer_pgd', '')} | "
                        f"{'yes' if rec['passed'] else 'NO'} |")
(out / "table.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
