"""User-facing errors: the CLI prints them as one line and exits with code 2."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


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



# packages of the training / export toolkit (pyproject's `toolkit` extra, brought by `cpu` and `gpu`;
# threadpoolctl comes with scikit-learn)
TOOLKIT = ("torch", "scipy", "sklearn", "safetensors", "tqdm", "matplotlib", "onnx", "onnxscript", "diffusers",
           "accelerate", "peft", "torchmetrics", "threadpoolctl")
# packages of pyproject's `stream` extra: recordings and the live sources, beside a device's `runtime` extra
STREAM = ("mne", "edfio", "brainflow", "pylsl")
# import name -> the name pip and the user know it by
PIP_NAMES = {"sklearn": "scikit-learn", "mne": "MNE-Python", "brainflow": "BrainFlow", "pylsl": "pylsl",
             "edfio": "edfio"}


def install_hint(module: str) -> str | None:
    """How to get the missing ``module`` a command imported: the pip line naming its pyproject extra (None: not one
    of eegsine's optional packages)."""
    top = module.split(".")[0]
    if top == "onnxruntime":
        return ('from a clone of eegsine, pip install ".[runtime]" (onnxruntime, the device runtime; on NVIDIA '
                "machines onnxruntime-gpu instead, never both)")
    if top in STREAM:
        return (f'from a clone of eegsine, pip install ".[stream]" ({PIP_NAMES[top]}: the recording readers and '
                "stream sources)")
    if top == "torchattacks":
        return ("pip install --no-deps torchattacks==3.5.1 (--no-deps: its torchvision requirement would replace "
                "your torch build)")
    if top in TOOLKIT:
        return ('this needs the toolkit: from a clone of eegsine, pip install ".[cpu]" '
                '(or ".[gpu]" on an NVIDIA machine; README "Install")')
    return None


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, a finder that refuses it, a half-removed install
        return False


def require(module: str, what: str) -> ModuleType:
    """``import module`` for ``what``, or one :class:`UserError` line naming the package and its pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        hint = install_hint(top) or f"pip install {top}"
        raise UserError(f"{what} needs {PIP_NAMES.get(top, top)}, which is not installed here "
                        f"({' '.join(str(e).split())}); {hint}") from None
