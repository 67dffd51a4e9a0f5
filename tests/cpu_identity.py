"""Seeded CPU runs before and after a change, through the public entry points.

    OMP_NUM_THREADS=1 CHECKOUT/.venv/bin/python -P tests/cpu_identity.py run CHECKOUT OUT > a.json   (each checkout)
    python tests/cpu_identity.py compare a.json b.json

``run`` uses the checkout's own eegsine and tests/ helpers and prints one JSON line: the classifier weights (hash),
validation history and gradient norms of both heads (FGSM-RS on digits), the robustness table, paired rows and
sanity checks of six attacks on them, the tiny diffusion run's losses and UNet weights (hash), the PNGs it
generates, and the encoder's metrics. ``compare`` says whether two such lines are equal, timings aside. Issue #25
used it to show that the GPU flags' defaults change no CPU number (against main at 03f1f51: equal).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

TIMING = {"seconds", "wall_s", "train_wall_s", "train_images_per_s", "eval_wall_s", "images_per_s", "threads",
          "seconds_per_epoch", "trials_per_s"}


def _drop_timing(o):
    if isinstance(o, dict):
        return {k: _drop_timing(v) for k, v in o.items() if k not in TIMING}
    if isinstance(o, list):
        return [_drop_timing(v) for v in o]
    return o


def _hash(tensors) -> str:
    return hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes() for v in tensors)).hexdigest()[:16]


def classifiers_and_attacks(out: Path) -> dict:
    from eegsine.bench.robustness.evaluate import RobustnessConfig, evaluate_robustness
    from eegsine.models.classifier import Classifier, ClassifierConfig
    from eegsine.training.classifier import ClassifierTrainConfig, train_classifier

    res = {}
    for head, init in (("linear", "default"), ("sine", "siren")):
        cfg = ClassifierTrainConfig(dataset="digits", mode="fgsm_rs", eps=0.1, epochs=2, n_train=400, batch_size=32,
                                    n_val_eval=50, val_pgd_steps=2, grad_log_steps=3, device="cpu",
                                    model=ClassifierConfig(head=head, init=init))
        m = train_classifier(cfg, out / f"cls_{head}")
        res[f"cls_{head}"] = {"w": _hash(Classifier.from_pretrained(out / f"cls_{head}").state_dict().values()),
                              "history": m["history"], "test": m["test_clean_accuracy"],
                              "gn": m["grad_norms_first_steps"]}
    rc = RobustnessConfig(n_eval=120, n_eval_expensive=30, batch_size=50, eps=[0.1, 0.3], expensive_eps=[0.3],
                          attacks=["fgsm", "pgd-ce", "apgd-ce", "square", "transfer", "bpda-pgd"], pgd_steps=3,
                          pgd_restarts=2, apgd_steps=4, square_queries=30, device="cpu")
    s = evaluate_robustness([out / "cls_linear", out / "cls_sine"], rc, out / "rob")
    res["attack"] = {"table": s["table"], "paired": s["paired"],
                     "checks": {lb: m["checks"] for lb, m in s["models"].items()}}
    return res


def diffusion_generation_encoder(out: Path) -> dict:
    from test_diffusion import digits_eeg, standin_encoder, tiny_cfg
    from test_encoder import _quick_cfg, small_vep

    from eegsine.models.diffusion import EEGDiffusion
    from eegsine.training.diffusion import train_diffusion
    from eegsine.training.encoder import train_encoder
    from eegsine.training.generate import generate

    ds = digits_eeg()
    m = train_diffusion(tiny_cfg(epochs=2), out / "diff", data=ds, encoder=standin_encoder(ds))
    res = {"diffusion": {"loss": [x["loss"] for x in m["history"]], "val": [x["val_loss"] for x in m["history"]],
                         "unet": _hash(EEGDiffusion.from_pretrained(out / "diff" / "model").unet.state_dict().values()),
                         "vae": m["vae"]}}
    idx = generate(out / "diff", split="val", out_dir=out / "gen", samples=2, max_trials=3, data=ds)
    res["generate"] = hashlib.sha256(b"".join((out / "gen" / f).read_bytes() for f in idx["files"])).hexdigest()[:16]
    res["encoder"] = json.loads(json.dumps(train_encoder(_quick_cfg(epochs=2), out / "enc", data=small_vep()),
                                           default=str))
    return res


def main(argv: list[str]) -> int:
    if argv[0] == "compare":
        a, b = (json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in argv[1:3])
        diff = [k for k in a if _drop_timing(a[k]) != _drop_timing(b.get(k))]
        print("equal" if not diff else f"differ: {', '.join(diff)}")
        return 1 if diff else 0
    tree, out = Path(argv[1]), Path(argv[2])
    sys.path.insert(0, str(tree / "tests"))
    import torch

    torch.set_num_threads(1)
    res = {**classifiers_and_attacks(out), **diffusion_generation_encoder(out)}
    print(json.dumps(res, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
