"""sbn_jax: Spectral Batch Normalization for JAX and Flax.

``SpectralBatchNorm`` and ``SpatialSpectralBatchNorm`` are the flax.linen
modules, ``SpectralGroupNorm``, ``SpectralLayerNorm`` and
``SpectralInstanceNorm`` the per-example spectral norms beyond the paper;
``sbn_jax.nnx`` holds their Flax NNX twins, and ``sbn_jax.functional`` and
``sbn_jax.family`` the pure functions they are built on. ``SBNOptions`` is
the one declaration of SBN's options, shared by all of them.
"""

from sbn_jax import family, functional, nnx
from sbn_jax.linen import (
    SpatialSpectralBatchNorm,
    SpectralBatchNorm,
    SpectralGroupNorm,
    SpectralInstanceNorm,
    SpectralLayerNorm,
)
from sbn_jax.options import SBNOptions

__all__ = [
    "SBNOptions",
    "SpatialSpectralBatchNorm",
    "SpectralBatchNorm",
    "SpectralGroupNorm",
    "SpectralInstanceNorm",
    "SpectralLayerNorm",
    "family",
    "functional",
    "nnx",
]
__version__ = "0.1.0"
