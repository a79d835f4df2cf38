"""The vocabulary every SBN implementation shares: axis roles, statistics, shapes.

This is the bottom module of the package: the options (:mod:`sbn_jax.options`),
the implementations (:mod:`sbn_jax._closed_form`, :mod:`sbn_jax._spectrum`,
:mod:`sbn_jax._dft`) and the public :mod:`sbn_jax.functional` import it, and it
imports none of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

FftNorm = Literal["backward", "ortho", "forward"]
FFT_NORMS: tuple[FftNorm, ...] = ("ortho", "backward", "forward")

# The factor each transform applies for n spatial positions, per fft_norm: the forward
# transform's and the inverse's (their product is 1/n, which makes them an exact inverse pair).
FORWARD_SCALE: dict[str, Callable[[int], float]] = {
    "backward": lambda n: 1.0,
    "ortho": lambda n: n**-0.5,
    "forward": lambda n: 1.0 / n,
}
INVERSE_SCALE: dict[str, Callable[[int], float]] = {
    "backward": lambda n: 1.0 / n,
    "ortho": lambda n: n**-0.5,
    "forward": lambda n: 1.0,
}


class Statistics(NamedTuple):
    """Spectral statistics, batch or running.

    Channel statistics have shape ``(C,)``; per-frequency statistics have the
    spectrum's shape with the batch axes dropped (see :func:`statistics_shape`).

    Attributes:
      mean_real: real part of the complex spectral mean.
      mean_imag: imaginary part of the complex spectral mean.
      var: biased variance ``mean(|X - mean|**2)``, real and non-negative; with
        ``separate_real_imag`` the variance of the real part only.
      var_imag: None, or with ``separate_real_imag`` the variance of the
        imaginary part.
    """

    mean_real: jax.Array
    mean_imag: jax.Array
    var: jax.Array
    var_imag: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Layout:
    """Roles of the axes of an input; all indices are non-negative.

    Attributes:
      ndim: rank of the input.
      feature_axis: the channel axis.
      spatial_axes: transformed axes, increasing; the last carries the half
        spectrum.
      batch_axes: every remaining axis; statistics are averaged over these.
    """

    ndim: int
    feature_axis: int
    spatial_axes: tuple[int, ...]
    batch_axes: tuple[int, ...]

    def spatial_sizes(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The sizes of the spatial axes of an input of ``shape``."""
        return tuple(shape[i] for i in self.spatial_axes)


def is_complex_affine(scale: Any, bias: Any) -> bool:
    """Whether a scale or bias (each an array or None) is complex: a complex affine map."""
    return any(v is not None and jnp.iscomplexobj(v) for v in (scale, bias))


def white_spectrum_std(fft_norm: str, size: int) -> float:
    """Standard deviation of every bin of ``rfftn(x)`` for white, unit-variance ``x``.

    ``size`` is the number of spatial positions ``n``: ``sqrt(n)`` under
    "backward", 1 under "ortho", ``1 / sqrt(n)`` under "forward". Dividing a
    spectrum by it and transforming back is the feature map times
    ``1 / sqrt(n)``, 1 and ``sqrt(n)`` respectively: the inverse pair is exact.
    """
    return FORWARD_SCALE[fft_norm](size) * math.sqrt(size)


def _normalize_axis(axis: int, ndim: int, what: str, argument: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{what} {axis} is out of range for an input of rank {ndim}: {argument} must be in "
            f"[{-ndim}, {ndim - 1}]."
        )
    return axis % ndim


def resolve_layout(ndim: int, axis: int = -1, spatial_axes: Sequence[int] | None = None) -> Layout:
    """Resolves which axes are feature, spatial and batch axes.

    Args:
      ndim: rank of the input.
      axis: the feature axis (``-1`` for NHWC, ``1`` for NCHW).
      spatial_axes: the axes to transform. ``None`` means every axis except
        axis 0 and the feature axis: NHWC -> (1, 2), (B, L, C) -> (1,),
        (B, D, H, W, C) -> (1, 2, 3), NCHW with ``axis=1`` -> (2, 3).

    Returns:
      The :class:`Layout`.

    Raises:
      ValueError: if there is no spatial axis, or a spatial axis is out of
        range, repeated, or equal to the feature axis.
    """
    feature_axis = _normalize_axis(axis, ndim, "Feature axis", "axis")
    if spatial_axes is None:
        spatial = tuple(i for i in range(1, ndim) if i != feature_axis)
        if not spatial:
            raise ValueError(
                f"SpectralBatchNorm needs at least one spatial axis, but an input of rank {ndim} "
                f"with feature axis {axis} has none: expected (batch, *spatial, features), "
                "e.g. NHWC, or pass spatial_axes=."
            )
    else:
        spatial_axes = tuple(spatial_axes)
        if not spatial_axes:
            raise ValueError("spatial_axes must name at least one axis; got an empty sequence.")
        argument = f"every entry of spatial_axes={spatial_axes}"
        spatial = tuple(_normalize_axis(a, ndim, "Spatial axis", argument) for a in spatial_axes)
        if len(set(spatial)) != len(spatial):
            raise ValueError(f"spatial_axes must not repeat an axis; got {spatial_axes}.")
        if feature_axis in spatial:
            raise ValueError(
                f"spatial_axes {spatial_axes} include the feature axis {axis}; expected them "
                "to be disjoint."
            )
        spatial = tuple(sorted(spatial))
    batch = tuple(i for i in range(ndim) if i != feature_axis and i not in spatial)
    return Layout(ndim, feature_axis, spatial, batch)


def spectrum_shape(shape: Sequence[int], layout: Layout) -> tuple[int, ...]:
    """Shape of ``rfftn(x, axes=layout.spatial_axes)`` for an input of ``shape``."""
    last = layout.spatial_axes[-1]
    return tuple(n // 2 + 1 if i == last else n for i, n in enumerate(shape))


def statistics_shape(shape: Sequence[int], layout: Layout, per_frequency: bool) -> tuple[int, ...]:
    """Shape of the statistics for an input of ``shape``.

    ``(C,)`` for channel statistics; for per-frequency statistics the spectrum's
    shape with the batch axes dropped (NHWC: ``(H, W//2+1, C)``; NCHW:
    ``(C, H, W//2+1)``).
    """
    if not per_frequency:
        return (shape[layout.feature_axis],)
    full = spectrum_shape(shape, layout)
    return tuple(n for i, n in enumerate(full) if i not in layout.batch_axes)


def along(vector: Any, axis: int, ndim: int) -> Any:
    """Reshapes a 1-D vector (NumPy or JAX) to broadcast along ``axis`` of a rank-``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = vector.shape[0]
    return vector.reshape(shape)


def broadcast_statistic(stat: jax.Array, layout: Layout, per_frequency: bool) -> jax.Array:
    """Inserts singleton axes so that a statistic (or a per-channel parameter) broadcasts.

    Channel statistics ``(C,)`` go along the feature axis; per-frequency
    statistics get the batch axes back.
    """
    if per_frequency:
        return jnp.expand_dims(stat, layout.batch_axes)
    return along(stat, layout.feature_axis, layout.ndim)
