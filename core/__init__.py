"""eegsine: EEG-to-image latent diffusion and sine-bounded classifiers, made deployable.

Importing ``eegsine`` is cheap and does not import torch: the torch-free runtime
(:mod:`eegsine.runtime`) lives in this package too.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# The checkout's top-level folders are eegsine's sub-packages, installed under ``eegsine.``; as top-level names
# they would shadow PyPI packages of the same name (Hugging Face's ``kernels``, which transformers >= 5 imports:
# diffusers' PEFT loaders failed with "cannot import name 'CUDAProperties' from 'kernels'").
CHECKOUT_FOLDERS = ("kernels", "training", "export", "bench", "core")


def _unshadow() -> None:
    """Take a source checkout's root off ``sys.path``: ``python -m``/``-c`` and ``python -m pytest`` put the
    working directory first, so anything run from the repository root would import its ``kernels/`` folder as
    ``kernels``. An installed wheel (``site-packages/eegsine``) has nothing to guard. The Makefile also runs
    Python with ``PYTHONSAFEPATH=1``; this keeps a user's ``python -m eegsine ...`` from the root safe too."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(here)
    if _os.path.basename(here) != "core" or not _os.path.isfile(_os.path.join(root, "pyproject.toml")):
        return
    root = _os.path.realpath(root)
    _sys.path[:] = [p for p in _sys.path if _os.path.realpath(p or _os.curdir) != root]
    for name in CHECKOUT_FOLDERS:  # a folder imported by mistake before eegsine was
        mod = _sys.modules.get(name)
        origin = getattr(mod, "__file__", None) or ""
        if mod is not None and _os.path.realpath(origin).startswith(_os.path.join(root, name) + _os.sep):
            del _sys.modules[name]


def hand_off(name: str) -> None:
    """A checkout folder's ``__init__`` imported as the top-level package ``name`` (plain ``python -c`` from the
    root, before eegsine was imported) calls this: the checkout leaves ``sys.path`` and the installed package of
    that name takes the folder's place in the import that is running (``ModuleNotFoundError`` when none is
    installed, as outside the checkout). So ``from diffusers import AutoencoderKL`` from the root gets Hugging
    Face's ``kernels``, not eegsine's."""
    import importlib

    _unshadow()  # off sys.path, and the half-imported folder out of sys.modules
    _sys.modules.pop(name, None)
    _sys.modules[name] = importlib.import_module(name)  # the import statement returns what sys.modules holds


_unshadow()
if __name__ in CHECKOUT_FOLDERS:  # this file imported as top-level `core`
    hand_off(__name__)
