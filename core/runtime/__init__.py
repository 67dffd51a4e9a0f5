"""The torch-free device wing: what runs on an edge or BCI device with numpy + onnxruntime only.

Public API (``from eegsine.runtime import ...``), from :mod:`eegsine.runtime.decoders`:
:class:`Bundle`, :class:`ImageClassifier` (older name :class:`SineClassifier`), :class:`EEGDecoder`,
:class:`EEGToImage` (returns :class:`ImageOutput`), :class:`DDIM`; from :mod:`eegsine.runtime.noise`,
:func:`initial_latents` (the initial noise the torch pipeline draws too).

The modules of this folder:

* ``decoders`` -- the bundle (manifest, sha256, backend sessions) and the three decoders.
* ``backends`` -- ONNX Runtime and OpenVINO behind one session protocol (OpenVINO imported only when chosen).
* ``tuning`` -- the per-host choice of (backend, precision, threads) per model that ``eegsine-verify --tune`` records.
* ``noise`` -- a diffusion trajectory's initial latents for a seed, per image (numpy; the torch pipeline's too).
* ``contracts``, ``manifest``, ``preprocessing``, ``isa`` -- what a bundle declares: each model's I/O
  contract, the manifest schema, the EEG preprocessing to apply, the CPU's INT8 ISA class.
* ``verify`` -- verification records and ``eegsine-verify`` (INT8 proven on this host's ISA class).
* ``stream``, ``sources`` -- ``eegsine stream``: decisions from a file, BrainFlow or LSL source.

Nothing here imports torch (``tests/test_layout.py`` holds every module of this folder to it).
"""
from eegsine.runtime.decoders import (BUNDLE_FORMAT, BUNDLE_VERSION, DDIM, MANIFEST, Bundle, Decoded, EEGDecoder,
                                      EEGToImage, ImageClassifier, ImageOutput, SineClassifier, check_eeg,
                                      encode_eeg, safe_path, select_providers)
from eegsine.runtime.noise import initial_latents

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "DDIM", "MANIFEST", "Bundle", "Decoded", "EEGDecoder", "EEGToImage",
           "ImageClassifier", "ImageOutput", "SineClassifier", "check_eeg", "encode_eeg", "initial_latents",
           "safe_path", "select_providers"]
