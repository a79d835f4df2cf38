"""SBN through the spectrum: the transform, statistics, normalization and the inverse, literally.

Two implementations share this path and differ only in the transform pair:
:func:`fft` (``jnp.fft``, the readable reference) and :func:`matmul` (dense DFT
matrices, :mod:`sbn_jax._dft`). Both have the signature every implementation
has (see :data:`sbn_jax.functional.IMPLEMENTATIONS`)::

    (x, running, scale, bias, layout, options) -> (y, statistics)

with ``x`` in the compute dtype, ``running`` None in training (batch statistics
are computed) and the statistics used returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from sbn_jax import _dft
from sbn_jax._layout import Layout, Options, Statistics, broadcast_statistic

Forward = Callable[[jax.Array, tuple[int, ...], str], jax.Array]
Inverse = Callable[[jax.Array, tuple[int, ...], tuple[int, ...], str], jax.Array]


def spectrum_statistics(
    spectrum: jax.Array,
    layout: Layout,
    per_frequency: bool,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    separate_real_imag: bool = False,
) -> Statistics:
    """Batch statistics of a spectrum, optionally across devices.

    Args:
      spectrum: complex array ``rfftn(x)``.
      layout: the input's :class:`Layout`.
      per_frequency: reduce over batch axes only (one statistic per bin and
        channel) instead of batch axes and all bins (one per channel).
      axis_name: pmap/shard_map axis to average over; two passes (the mean,
        then the centered second moment), as flax BatchNorm does.
      axis_index_groups: device groups to average within.
      separate_real_imag: one variance for the real parts and one for the
        imaginary parts instead of one for ``|X - mean|**2``.

    Returns:
      :class:`Statistics` with :func:`sbn_jax.functional.statistics_shape`.
    """
    pmean = Options(axis_name=axis_name, axis_index_groups=axis_index_groups).pmean
    axes = layout.batch_axes if per_frequency else layout.batch_axes + layout.spatial_axes
    mean = pmean(jnp.mean(spectrum, axis=axes, keepdims=True))
    centered = spectrum - mean

    def variance(values: jax.Array) -> jax.Array:
        return jnp.squeeze(pmean(jnp.mean(values, axis=axes, keepdims=True)), axes)

    real_square, imag_square = jnp.real(centered) ** 2, jnp.imag(centered) ** 2
    if separate_real_imag:
        var, var_imag = variance(real_square), variance(imag_square)
    else:
        var, var_imag = variance(real_square + imag_square), None
    return Statistics(
        jnp.squeeze(jnp.real(mean), axes), jnp.squeeze(jnp.imag(mean), axes), var, var_imag
    )


def normalize_spectrum(
    spectrum: jax.Array,
    stats: Statistics,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    per_frequency: bool,
    epsilon: float,
    use_mean: bool = True,
    divide_by: str = "std",
    constant_std: float = 1.0,
) -> jax.Array:
    """``scale * (X - mean) / sqrt(var + epsilon) + bias``; a real ``bias`` lands on the real part.

    ``scale`` and ``bias`` may be complex (``complex_affine``): every bin is
    then multiplied by the complex scale and shifted by the complex bias.
    ``use_mean=False`` drops ``- mean``. ``divide_by="constant"`` divides by
    ``constant_std`` (see :func:`sbn_jax.functional.white_spectrum_std`) instead
    of the statistics' standard deviation, ``"none"`` by nothing. Statistics
    with a ``var_imag`` divide real and imaginary parts by their own deviations.
    """
    real_dtype = spectrum.real.dtype

    def broadcast(stat: jax.Array) -> jax.Array:
        return broadcast_statistic(stat, layout, per_frequency).astype(real_dtype)

    if use_mean:
        mean = broadcast(stats.mean_real) + 1j * broadcast(stats.mean_imag)
        spectrum = spectrum - mean.astype(spectrum.dtype)
    complex_scale = scale is not None and jnp.iscomplexobj(scale)
    factor = jnp.ones((), real_dtype)
    if scale is not None and not complex_scale:
        factor = broadcast_statistic(scale, layout, False).astype(real_dtype)
    if divide_by == "std" and stats.var_imag is not None:
        real = jnp.real(spectrum) * (factor * jax.lax.rsqrt(broadcast(stats.var) + epsilon))
        imag = jnp.imag(spectrum) * (factor * jax.lax.rsqrt(broadcast(stats.var_imag) + epsilon))
        out = jax.lax.complex(real, imag)
    else:
        if divide_by == "std":
            factor = factor * jax.lax.rsqrt(broadcast(stats.var) + epsilon)
        elif divide_by == "constant":
            factor = factor / constant_std
        out = spectrum * factor
    if scale is not None and complex_scale:
        out = out * per_channel(scale, layout, spectrum.dtype)
    if bias is not None:
        out = out + per_channel(bias, layout, spectrum.dtype)
    return out


def per_channel(values: jax.Array, layout: Layout, complex_dtype: Any) -> jax.Array:
    """A ``(C,)`` parameter broadcast over the spectrum, complex or real as given."""
    dtype = complex_dtype if jnp.iscomplexobj(values) else jnp.finfo(complex_dtype).dtype
    return broadcast_statistic(values, layout, False).astype(dtype)


def _through(
    x: jax.Array,
    running: Statistics | None,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: Options,
    forward: Forward,
    inverse: Inverse,
) -> tuple[jax.Array, Statistics]:
    """Transform, statistics (unless ``running``), normalization, inverse, with one pair."""
    spectrum = forward(x, layout.spatial_axes, options.fft_norm)
    stats = running
    if stats is None:
        stats = spectrum_statistics(
            spectrum,
            layout,
            options.per_frequency,
            options.axis_name,
            options.axis_index_groups,
            options.separate_real_imag,
        )
    sizes = layout.spatial_sizes(x.shape)
    normalized = normalize_spectrum(
        spectrum,
        stats,
        scale,
        bias,
        layout,
        options.per_frequency,
        options.epsilon,
        options.use_mean,
        options.divide_by,
        options.constant_std(math.prod(sizes)),
    )
    return inverse(normalized, layout.spatial_axes, sizes, options.fft_norm), stats


def matmul(
    x: jax.Array,
    running: Statistics | None,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: Options,
) -> tuple[jax.Array, Statistics]:
    """SBN with the transforms as small dense DFT matrices (fast on GPU/TPU at ResNet sizes)."""
    return _through(x, running, scale, bias, layout, options, _dft.rfftn, _dft.irfftn)


def fft(
    x: jax.Array,
    running: Statistics | None,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: Options,
) -> tuple[jax.Array, Statistics]:
    """SBN with ``jnp.fft``, on ``x`` arranged as (*batch, feature, *spatial).

    XLA's FFT transforms the minor-most axes, so ``jnp.fft`` wraps each transform
    of other axes in a pair of transposes. Moving the spatial axes last once
    leaves two transposes in all instead of four (5-25% of a per-frequency step
    on CPU, measured), and none for NCHW.
    """
    order = (*layout.batch_axes, layout.feature_axis, *layout.spatial_axes)
    nb = len(layout.batch_axes)
    moved = Layout(layout.ndim, nb, tuple(range(nb + 1, layout.ndim)), tuple(range(nb)))
    # Per-frequency statistics keep the caller's order of the non-batch axes.
    kept = sorted(order[nb:])
    stats_to_moved = tuple(kept.index(i) for i in order[nb:])
    if running is not None and options.per_frequency:
        running = _transpose_all(running, stats_to_moved)
    y, stats = _through(
        jnp.transpose(x, order), running, scale, bias, moved, options, rfftn_last, irfftn_last
    )
    if options.per_frequency:
        stats = _transpose_all(stats, inverse_permutation(stats_to_moved))
    return jnp.transpose(y, inverse_permutation(order)), stats


def inverse_permutation(permutation: Sequence[int]) -> tuple[int, ...]:
    """The permutation that undoes ``permutation`` (for ``jnp.transpose``)."""
    return tuple(list(permutation).index(i) for i in range(len(permutation)))


def _transpose_all(stats: Statistics, permutation: tuple[int, ...]) -> Statistics:
    return jax.tree.map(lambda s: jnp.transpose(s, permutation), stats)


# Both transforms take their axes last (see fft) and see a (batch, *signal) operand: with several
# leading axes, XLA's CPU FFT fails a layout check (RET_CHECK in fft_thunk.cc) on batch-sharded
# inputs under jit (jax 0.10.2, tests/test_multidevice.py).
def _flat_leading(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, tuple[int, ...]]:
    """Merges the axes before ``axes`` (which must be the last ones) into one.

    Returns the merged array and the merged axes' old shape.
    """
    assert axes == tuple(range(x.ndim - len(axes), x.ndim)), (x.shape, axes)
    lead = x.shape[: x.ndim - len(axes)]
    return x.reshape(math.prod(lead), *x.shape[x.ndim - len(axes) :]), lead


def rfftn_last(x: jax.Array, axes: tuple[int, ...], norm: str) -> jax.Array:
    """``jnp.fft.rfftn`` over ``axes``, which must be the last axes of ``x``."""
    flat, lead = _flat_leading(x, axes)
    spectrum = jnp.fft.rfftn(flat, axes=tuple(range(1, flat.ndim)), norm=norm)
    return spectrum.reshape(*lead, *spectrum.shape[1:])


def irfftn_last(
    spectrum: jax.Array, axes: tuple[int, ...], sizes: tuple[int, ...], norm: str
) -> jax.Array:
    """``jnp.fft.irfftn`` to ``sizes`` over ``axes``, which must be the last axes."""
    flat, lead = _flat_leading(spectrum, axes)
    y = jnp.fft.irfftn(flat, s=sizes, axes=tuple(range(1, flat.ndim)), norm=norm)
    return y.reshape(*lead, *y.shape[1:])
