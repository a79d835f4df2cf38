"""SBN through the spectrum: the transform, statistics, normalization and the inverse, literally.

Two implementations share this path and differ only in the transform pair:
``"fft"`` (``jnp.fft`` with the spatial axes moved last, the readable
reference) and ``"matmul"`` (dense DFT matrices, :mod:`sbn_jax._dft`). Each is
the three steps every implementation has (see
:class:`sbn_jax.functional.Implementation`): the transform (:func:`fft` or
:func:`matmul`, which give a :class:`Spectrum`), :func:`statistics` and
:func:`normalize` (which ends with the inverse transform). The per-example
norms of :mod:`sbn_jax.family` use the same transforms
(:func:`transform_last`, :func:`back_to_space`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sbn_jax import _dft
from sbn_jax._layout import Layout, Statistics, broadcast_statistic
from sbn_jax.options import SBNOptions

Inverse = Callable[[jax.Array, tuple[int, ...], tuple[int, ...], str], jax.Array]


class Spectrum(NamedTuple):
    """``rfftn`` of an input, with what its statistics, normalization and inverse need.

    Attributes:
      values: the complex half spectrum, its axes in the transform's order.
      layout: the roles of the axes of ``values``.
      order: the permutation that took the input's axes to that order
        (identity where the transform takes the axes where they are).
      sizes: the spatial sizes of the input, which the inverse restores.
      inverse: the inverse transform, ``(values, axes, sizes, norm) -> real array``.
    """

    values: jax.Array
    layout: Layout
    order: tuple[int, ...]
    sizes: tuple[int, ...]
    inverse: Inverse


def transform_last(x: jax.Array, layout: Layout, fft_norm: str) -> Spectrum:
    """``jnp.fft.rfftn`` of ``x`` with its axes arranged as (*batch, feature, *spatial).

    XLA's FFT transforms the minor-most axes, so ``jnp.fft`` wraps each transform
    of other axes in a pair of transposes. Moving the spatial axes last once
    leaves two transposes in all instead of four (5-25% of a per-frequency step
    on CPU, measured), and none for NCHW.
    """
    order = (*layout.batch_axes, layout.feature_axis, *layout.spatial_axes)
    nb = len(layout.batch_axes)
    moved = Layout(layout.ndim, nb, tuple(range(nb + 1, layout.ndim)), tuple(range(nb)))
    values = rfftn_last(jnp.transpose(x, order), moved.spatial_axes, fft_norm)
    return Spectrum(values, moved, order, layout.spatial_sizes(x.shape), irfftn_last)


def transform_in_place(x: jax.Array, layout: Layout, fft_norm: str) -> Spectrum:
    """The dense-DFT ``rfftn`` of ``x`` (:mod:`sbn_jax._dft`), its axes where they are."""
    values = _dft.rfftn(x, layout.spatial_axes, fft_norm)
    order = tuple(range(layout.ndim))
    return Spectrum(values, layout, order, layout.spatial_sizes(x.shape), _dft.irfftn)


def back_to_space(spectrum: Spectrum, values: jax.Array, fft_norm: str) -> jax.Array:
    """The inverse transform of ``values`` (arranged as ``spectrum``'s), in the input's axes."""
    y = spectrum.inverse(values, spectrum.layout.spatial_axes, spectrum.sizes, fft_norm)
    if spectrum.order == tuple(range(y.ndim)):
        return y
    return jnp.transpose(y, inverse_permutation(spectrum.order))


def fft(x: jax.Array, layout: Layout, options: SBNOptions) -> Spectrum:
    """The first step of the implementation ``"fft"``: ``jnp.fft.rfftn``, axes moved last."""
    return transform_last(x, layout, options.fft_norm)


def matmul(x: jax.Array, layout: Layout, options: SBNOptions) -> Spectrum:
    """The first step of ``"matmul"``: the transform as small dense DFT matrices.

    Fast on GPU/TPU at ResNet sizes; the axes stay where they are.
    """
    return transform_in_place(x, layout, options.fft_norm)


def statistics(
    spectrum: Spectrum, layout: Layout, options: SBNOptions, mask: jax.Array | None
) -> Statistics:
    """The batch statistics of ``spectrum``, per-frequency ones in the caller's axis order.

    ``mask`` (None, or boolean of the input's rank, see
    :func:`sbn_jax._checks.check_mask`) selects the examples they are taken from.
    """
    if mask is not None:
        mask = jnp.transpose(mask, spectrum.order)
    stats = spectrum_statistics(spectrum.values, spectrum.layout, options, mask)
    if options.per_frequency:
        stats = _transpose_all(stats, inverse_permutation(_statistics_permutation(spectrum)))
    return stats


def normalize(
    spectrum: Spectrum,
    stats: Statistics,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: SBNOptions,
) -> jax.Array:
    """Normalizes ``spectrum`` with ``stats`` (in the caller's order) and transforms it back."""
    if options.per_frequency:
        stats = _transpose_all(stats, _statistics_permutation(spectrum))
    size = math.prod(spectrum.sizes)
    values = normalize_spectrum(spectrum.values, stats, scale, bias, spectrum.layout, options, size)
    return back_to_space(spectrum, values, options.fft_norm)


def _statistics_permutation(spectrum: Spectrum) -> tuple[int, ...]:
    """Takes per-frequency statistics from the caller's axis order to the spectrum's."""
    # Per-frequency statistics keep the caller's order of the non-batch axes.
    nb = len(spectrum.layout.batch_axes)
    kept = sorted(spectrum.order[nb:])
    return tuple(kept.index(i) for i in spectrum.order[nb:])


def spectrum_statistics(
    spectrum: jax.Array, layout: Layout, options: SBNOptions, mask: jax.Array | None = None
) -> Statistics:
    """Batch statistics of a spectrum, across the devices of ``options.axis_name``.

    Args:
      spectrum: complex array ``rfftn(x)``.
      layout: the roles of its axes.
      options: ``per_frequency`` reduces over the batch axes only (one
        statistic per bin and channel) instead of the batch axes and all bins;
        ``axis_name``/``axis_index_groups`` average across devices, in two
        passes (the mean, then the centered second moment) as flax's BatchNorm;
        ``separate_real_imag`` gives one variance for the real parts and one
        for the imaginary parts instead of one for ``|X - mean|**2``.
      mask: None, or a boolean array of the spectrum's rank, of size 1 on every
        axis but the batch axes: the statistics of the selected examples only.

    Returns:
      :class:`Statistics` with :func:`sbn_jax.functional.statistics_shape`.
    """
    axes = layout.batch_axes if options.per_frequency else layout.batch_axes + layout.spatial_axes
    if mask is None:

        def mean(values: jax.Array) -> jax.Array:
            return options.pmean(jnp.mean(values, axis=axes, keepdims=True))

    else:
        # One cross-device mean of the mask for the two (or three) statistics that divide by it.
        fraction = options.fraction_selected(mask, spectrum.real.dtype)

        def mean(values: jax.Array) -> jax.Array:
            selected = jnp.where(mask, values, jnp.zeros((), values.dtype))
            return options.pmean(jnp.mean(selected, axis=axes, keepdims=True)) / fraction

    spectral_mean = mean(spectrum)
    centered = spectrum - spectral_mean

    def variance(values: jax.Array) -> jax.Array:
        return jnp.squeeze(mean(values), axes)

    real_square, imag_square = jnp.real(centered) ** 2, jnp.imag(centered) ** 2
    if options.separate_real_imag:
        var, var_imag = variance(real_square), variance(imag_square)
    else:
        var, var_imag = variance(real_square + imag_square), None
    mean_real, mean_imag = jnp.real(spectral_mean), jnp.imag(spectral_mean)
    return Statistics(jnp.squeeze(mean_real, axes), jnp.squeeze(mean_imag, axes), var, var_imag)


def normalize_spectrum(
    spectrum: jax.Array,
    stats: Statistics,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: SBNOptions,
    spatial_size: int | None = None,
) -> jax.Array:
    """``scale * (X - mean) / sqrt(var + epsilon) + bias``; a real ``bias`` lands on the real part.

    ``stats`` are arranged for ``layout`` (per-frequency ones: the spectrum's
    shape without the batch axes). ``scale`` and ``bias`` may be complex
    (``complex_affine``): every bin is then multiplied by the complex scale and
    shifted by the complex bias. ``options.use_mean=False`` drops ``- mean``;
    ``divide_by="constant"`` divides by ``options.constant_std(spatial_size)``
    (``spatial_size``: the number of spatial positions of the input, needed
    only there) instead of the statistics' standard deviation, ``"none"`` by
    nothing.
    Statistics with a ``var_imag`` divide real and imaginary parts by their own
    deviations.
    """
    real_dtype = spectrum.real.dtype
    per_frequency, epsilon = options.per_frequency, options.epsilon

    def broadcast(stat: jax.Array) -> jax.Array:
        return broadcast_statistic(stat, layout, per_frequency).astype(real_dtype)

    if options.use_mean:
        mean = broadcast(stats.mean_real) + 1j * broadcast(stats.mean_imag)
        spectrum = spectrum - mean.astype(spectrum.dtype)
    complex_scale = scale is not None and jnp.iscomplexobj(scale)
    factor = jnp.ones((), real_dtype)
    if scale is not None and not complex_scale:
        factor = broadcast_statistic(scale, layout, False).astype(real_dtype)
    if options.divide_by == "std" and stats.var_imag is not None:
        real = jnp.real(spectrum) * (factor * jax.lax.rsqrt(broadcast(stats.var) + epsilon))
        imag = jnp.imag(spectrum) * (factor * jax.lax.rsqrt(broadcast(stats.var_imag) + epsilon))
        out = jax.lax.complex(real, imag)
    else:
        if options.divide_by == "std":
            factor = factor * jax.lax.rsqrt(broadcast(stats.var) + epsilon)
        elif options.divide_by == "constant":
            if spatial_size is None:
                raise ValueError('divide_by="constant" needs spatial_size, the input\'s positions.')
            factor = factor / options.constant_std(spatial_size)
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
