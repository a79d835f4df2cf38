"""What the NNX modules share: the fit check of an input, and their per-channel params.

Private to :mod:`sbn_jax.nnx`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
from flax import nnx

from sbn_jax import functional

Dtype = Any
Initializer = Any
# The same initializer objects as the linen modules' defaults.
ZEROS = jax.nn.initializers.zeros
ONES = jax.nn.initializers.ones
# nnx.BatchNorm's default for scale_metadata and bias_metadata: none (an immutable empty mapping).
NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def check_fits(
    name: str,
    x: jax.Array,
    num_features: int,
    axis: int,
    spatial_axes: Sequence[int] | None,
    spatial_shape: tuple[int, ...] | None = None,
) -> functional.Layout:
    """The layout of ``x``, if the shapes fixed at construction fit it; else a clear error.

    NNX sizes the parameters and statistics before seeing an input, so a wrong
    ``num_features`` or ``spatial_shape`` would otherwise surface as a
    broadcasting error inside JAX. ``spatial_shape`` is None for modules
    without per-frequency statistics.
    """
    layout = functional.resolve_layout(x.ndim, axis, spatial_axes)
    features = x.shape[layout.feature_axis]
    if features != num_features:
        raise ValueError(
            f"{name} was built with num_features={num_features}, but x of shape "
            f"{tuple(x.shape)} has {features} features on axis {axis}: expected "
            f"num_features={features} (or set axis= to the feature axis)."
        )
    sizes = layout.spatial_sizes(x.shape)
    if spatial_shape is not None and sizes != spatial_shape:
        raise ValueError(
            f"{name} was built with spatial_shape={spatial_shape} for its per-frequency "
            f"statistics, but x of shape {tuple(x.shape)} has spatial sizes {sizes} on axes "
            f"{layout.spatial_axes}: expected spatial_shape={sizes}. Per-frequency statistics "
            "only apply to the spatial size they were made for."
        )
    return layout


class Affine(NamedTuple):
    """How a module makes its per-channel ``scale`` and ``bias`` (``nnx.BatchNorm``'s arguments).

    ``scale_metadata`` / ``bias_metadata`` are set on the ``nnx.Param`` (e.g.
    ``{"out_sharding": ("model",)}`` for ``nnx.get_partition_spec``), and on
    its imaginary twin with ``complex_affine``.
    """

    use_scale: bool
    use_bias: bool
    scale_init: Initializer
    bias_init: Initializer
    param_dtype: Dtype
    scale_metadata: Mapping[str, Any]
    bias_metadata: Mapping[str, Any]
    complex_affine: bool

    def make(self, module: Any, features: int, rngs: nnx.Rngs) -> None:
        """Sets ``scale``, ``bias``, ``scale_imag``, ``bias_imag`` (or empty slots) on ``module``.

        The keys are drawn in that order, for the params that exist only.
        """
        names = {"scale": self.use_scale, "bias": self.use_bias}
        inits = {"scale": self.scale_init, "bias": self.bias_init}
        metadata = {"scale": self.scale_metadata, "bias": self.bias_metadata}
        for part in ("", "_imag"):
            for name, use in names.items():
                exists = use and (part == "" or self.complex_affine)
                init = inits[name] if part == "" else ZEROS
                value = init(rngs.params(), (features,), self.param_dtype) if exists else None
                setattr(module, name + part, _slot(value, metadata[name]))
        module.complex_affine = self.complex_affine


def _slot(value: jax.Array | None, metadata: Mapping[str, Any]) -> Any:
    """An ``nnx.Param`` holding ``value`` with ``metadata``, or an empty slot for None."""
    return nnx.data(None) if value is None else nnx.Param(value, **metadata)


def affine_values(module: Any) -> tuple[jax.Array | None, jax.Array | None]:
    """``(scale, bias)`` of a module, each ``real + 1j * imag`` with ``complex_affine``."""

    def value(real: Any, imag: Any) -> jax.Array | None:
        if real is None:
            return None
        return real[...] if imag is None else jax.lax.complex(real[...], imag[...])

    return value(module.scale, module.scale_imag), value(module.bias, module.bias_imag)
