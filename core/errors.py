"""User-facing errors: the CLI prints them as one line and exits with code 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, flag, data). Message is one line naming the culprit."""

    exit_code = 2


class DataMissingError(UserError):
    """A data set is not present locally; the message says how to get it.

    Loaders name their folder option ``--root``, the flag of ``eegsine data``; a command that
    takes it under another name (``--data-root`` in training) re-raises :meth:`for_flag`.
    """

    def for_flag(self, flag: str) -> "DataMissingError":
        return DataMissingError(str(self).replace("--root", flag))



# packages of the training / export toolkit (pyproject's `toolkit` extra, brought by `cpu` and `gpu`)
TOOLKIT = ("torch", "scipy", "sklearn", "safetensors", "tqdm", "matplotlib", "onnx", "onnxscript", "diffusers",
           "accelerate", "peft", "torchmetrics")


def install_hint(module: str) -> str | None:
    """How to get the missing ``module`` a command imported (None: not one of eegsine's optional packages)."""
    top = module.split(".")[0]
    if top == "onnxruntime":
        return ("pip install onnxruntime (the device runtime; on NVIDIA machines onnxruntime-gpu instead, "
                "never both)")
    if top == "mne":
        return "pip install mne (MNE-Python reads and writes the EDF/BDF/FIF recordings)"
    if top == "torchattacks":
        return ("pip install --no-deps torchattacks==3.5.1 (--no-deps: its torchvision requirement would replace "
                "your torch build)")
    if top in TOOLKIT:
        return ('this command needs the toolkit: from a clone of eegsine, pip install ".[cpu]" '
                '(or ".[gpu]" on an NVIDIA machine; README "Install")')
    return None
