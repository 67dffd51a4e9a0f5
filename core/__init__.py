"""eegsine: EEG-to-image latent diffusion and sine-bounded classifiers, made deployable.

Importing ``eegsine`` is cheap and does not import torch: the torch-free runtime
(:mod:`eegsine.runtime`) lives in this package too.
"""
__version__ = "0.1.0"
