"""sbn_jax: Spectral Batch Normalization for JAX and Flax.

``SpectralBatchNorm`` and ``SpatialSpectralBatchNorm`` are the flax.linen
modules; ``sbn_jax.nnx`` holds their Flax NNX twins and ``sbn_jax.functional``
the pure functions both are built on.
"""

from sbn_jax import functional, nnx
from sbn_jax.linen import SpatialSpectralBatchNorm, SpectralBatchNorm

__all__ = ["SpatialSpectralBatchNorm", "SpectralBatchNorm", "functional", "nnx"]
__version__ = "0.1.0"
