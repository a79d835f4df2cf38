"""Spectral Batch Normalization as pure functions.

This module holds the math once; the Flax modules in :mod:`sbn_jax.linen` and
:mod:`sbn_jax.nnx` are thin shells over :func:`spectral_batch_norm`. Everything
here works on plain arrays, so it can be used from raw JAX, Equinox or Haiku.

For an input ``x`` with one feature axis, one or more spatial axes and batch
axes (every other axis), SBN computes

1. ``X = rfftn(x, axes=spatial, norm=fft_norm)`` in float32 (or float64),
2. statistics over the batch axes (and, for channel statistics, over all
   frequency bins): a complex mean ``mu`` and a real, biased variance
   ``var = mean(|X - mu|**2)``,
3. ``Y = scale * (X - mu) / sqrt(var + epsilon) + bias`` (``bias`` is real and
   lands on the real part of every bin),
4. ``y = irfftn(Y, s=spatial sizes, axes=spatial, norm=fft_norm)``.

Spatial axes are kept in increasing order; the last of them carries the half
spectrum (``n // 2 + 1`` bins), as in ``jnp.fft.rfftn``.

Three implementations compute the same function (``impl``):

* ``"fft"``: the four steps above, literally (with the spatial axes moved last
  once, where XLA's FFT wants them). The readable reference.
* ``"closed_form"`` (channel statistics only): no transform at all. See
  :mod:`sbn_jax._closed_form` for the derivation: SBN with channel
  statistics is ``a * x`` plus two fixed patterns on the first row.
* ``"matmul"``: the transforms written as small dense DFT matrices, which beat
  FFT libraries at ResNet sizes on accelerators (see :mod:`sbn_jax._dft`).
* ``"auto"``: ``closed_form`` for channel statistics (as fast as BatchNorm);
  for per-frequency statistics, ``matmul`` on GPU/TPU when every spatial size
  is at most ``MATMUL_MAX_SIZE`` and ``fft`` otherwise. On CPU ``fft`` always
  wins: measured with ``python -m benchmarks`` (BENCHMARKS.md), a forward plus
  backward round trip through the matmul DFT costs 1.3x to 2.4x the XLA FFT's at
  spatial sizes 7, 14, 32 and 56, because the CPU dot kernels run far below
  peak with contraction sizes this small. The accelerator threshold is the
  design's (DESIGN.md section 2), not yet measured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sbn_jax import _closed_form, _dft

FFT_NORMS = ("ortho", "backward", "forward")
IMPLS = ("auto", "fft", "closed_form", "matmul")
DIVIDE_BY = ("std", "constant", "none")
# Largest spatial size for which "auto" uses the matmul DFT on accelerators.
MATMUL_MAX_SIZE = 64


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


def _normalize_axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for an input of rank {ndim}.")
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
    feature_axis = _normalize_axis(axis, ndim, "Feature axis")
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
        spatial = tuple(_normalize_axis(a, ndim, "Spatial axis") for a in spatial_axes)
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


def init_statistics(shape: Sequence[int], separate_real_imag: bool = False) -> Statistics:
    """Initial running statistics: mean 0 + 0j, variance(s) 1, float32."""
    zeros, ones = jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32)
    return Statistics(zeros, zeros, ones, ones if separate_real_imag else None)


def update_running_statistics(
    running: Statistics, batch: Statistics, momentum: float, variance_factor: float = 1.0
) -> Statistics:
    """Moving average, Flax convention: ``momentum * running + (1 - momentum) * batch``.

    The batch variance is multiplied by ``variance_factor`` first (1: the biased
    batch variance; see :func:`running_variance_factor`). PyTorch's and the
    paper's ``momentum`` (lambda) is ``1 - momentum`` here.
    """
    batch = batch._replace(
        var=batch.var * variance_factor,
        var_imag=None if batch.var_imag is None else batch.var_imag * variance_factor,
    )
    return jax.tree.map(
        lambda r, b: momentum * r + (1.0 - momentum) * b.astype(r.dtype), running, batch
    )


RUNNING_VARIANCES = ("biased", "paper")


def running_variance_factor(
    running_variance: str, shape: Sequence[int], layout: Layout, per_frequency: bool
) -> float:
    """The factor applied to the batch variance before it enters the running average.

    ``"biased"`` (default): 1, the variance that normalized the batch, as Flax's
    BatchNorm keeps it. ``"paper"``: Algorithm 1 of the paper, ``n / (n - 1)``
    with ``n = C * H * W / 2`` as written there (C channels, ``H * W`` the
    product of the spatial sizes) -- not the count actually averaged per
    channel, ``B * H * (W // 2 + 1)``. Defined for channel statistics only, the
    paper's.

    Raises:
      ValueError: an unknown name, or ``"paper"`` with per-frequency statistics.
    """
    if running_variance not in RUNNING_VARIANCES:
        raise ValueError(
            f"running_variance must be one of {RUNNING_VARIANCES}; got {running_variance!r}."
        )
    if running_variance == "biased":
        return 1.0
    if per_frequency:
        raise ValueError(
            'running_variance="paper" is Algorithm 1 of the paper, which has channel statistics '
            "only; use per_frequency=False or running_variance='biased'."
        )
    n = shape[layout.feature_axis] * math.prod(shape[i] for i in layout.spatial_axes) / 2
    return n / (n - 1)


def _check_input(x: jax.Array) -> None:
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"SpectralBatchNorm expects a real floating-point input; got complex {dtype}. "
            "The spectrum is computed inside the layer."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"SpectralBatchNorm expects a floating-point input (float32, bfloat16, ...); "
            f"got {dtype}. Cast it first, e.g. x.astype(jnp.float32)."
        )


def _check_fft_norm(fft_norm: str) -> None:
    if fft_norm not in FFT_NORMS:
        raise ValueError(f"fft_norm must be one of {FFT_NORMS}; got {fft_norm!r}.")


def check_ablation(divide_by: str, separate_real_imag: bool) -> None:
    """Validates the ablation options of :func:`spectral_batch_norm`."""
    if divide_by not in DIVIDE_BY:
        raise ValueError(f"divide_by must be one of {DIVIDE_BY}; got {divide_by!r}.")
    if separate_real_imag and divide_by != "std":
        raise ValueError(
            "separate_real_imag=True changes which standard deviations divide the spectrum, so "
            f'it needs divide_by="std"; got divide_by={divide_by!r}.'
        )


def white_spectrum_std(fft_norm: str, size: int) -> float:
    """Standard deviation of every bin of ``rfftn(x)`` for white, unit-variance ``x``.

    ``size`` is the number of spatial positions ``n``: ``sqrt(n)`` under
    "backward", 1 under "ortho", ``1 / sqrt(n)`` under "forward". Dividing a
    spectrum by it and transforming back is the feature map times
    ``1 / sqrt(n)``, 1 and ``sqrt(n)`` respectively: the inverse pair is exact.
    """
    return _closed_form.FORWARD_SCALE[fft_norm](size) * math.sqrt(size)


def _reduction_group_size(axis_name: Any, axis_index_groups: Any) -> int:
    if axis_name is None:
        return 1
    if axis_index_groups is not None:
        return len(axis_index_groups[0])
    return int(jax.lax.psum(1, axis_name))


def _check_statistic_count(shape: Sequence[int], layout: Layout, per_frequency: bool, group: int):
    """Refuses training statistics made from a single value (as torch's BatchNorm does)."""
    count = math.prod(shape[i] for i in layout.batch_axes)
    if not per_frequency:
        count *= math.prod(spectrum_shape(shape, layout)[i] for i in layout.spatial_axes)
    if count * group == 1:
        what = "example" if per_frequency else "example with a single frequency bin"
        raise ValueError(
            f"Expected more than one value per statistic when training, got input shape "
            f"{tuple(shape)} (one {what}, batch axes {layout.batch_axes}). Use a larger batch, "
            "or use_running_average=True."
        )


def _broadcast_statistic(stat: jax.Array, layout: Layout, per_frequency: bool) -> jax.Array:
    """Inserts singleton axes so that ``stat`` broadcasts against the spectrum."""
    if per_frequency:
        return jnp.expand_dims(stat, layout.batch_axes)
    shape = [1] * layout.ndim
    shape[layout.feature_axis] = stat.shape[0]
    return stat.reshape(shape)


def _pmean(values: Any, axis_name: Any, axis_index_groups: Any) -> Any:
    if axis_name is None:
        return values
    return jax.lax.pmean(values, axis_name, axis_index_groups=axis_index_groups)


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
      :class:`Statistics` with :func:`statistics_shape`.
    """
    axes = layout.batch_axes if per_frequency else layout.batch_axes + layout.spatial_axes
    mean = _pmean(jnp.mean(spectrum, axis=axes, keepdims=True), axis_name, axis_index_groups)
    centered = spectrum - mean

    def variance(values):
        second = jnp.mean(values, axis=axes, keepdims=True)
        return jnp.squeeze(_pmean(second, axis_name, axis_index_groups), axes)

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
    """``scale * (X - mean) / sqrt(var + epsilon) + bias``; ``bias`` lands on the real part.

    ``use_mean=False`` drops ``- mean``. ``divide_by="constant"`` divides by
    ``constant_std`` (see :func:`white_spectrum_std`) instead of the
    statistics' standard deviation, ``"none"`` by nothing. Statistics with a
    ``var_imag`` divide real and imaginary parts by their own deviations.
    """
    real_dtype = spectrum.real.dtype

    def broadcast(stat):
        return _broadcast_statistic(stat, layout, per_frequency).astype(real_dtype)

    if use_mean:
        mean = broadcast(stats.mean_real) + 1j * broadcast(stats.mean_imag)
        spectrum = spectrum - mean.astype(spectrum.dtype)
    factor = jnp.ones((), real_dtype)
    if scale is not None:
        factor = _broadcast_statistic(scale, layout, False).astype(real_dtype)
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
    if bias is not None:
        out = out + _broadcast_statistic(bias, layout, False).astype(real_dtype)
    return out


def batch_norm_affine_before_sbn(
    per_frequency: bool,
    use_scale: bool,
    use_bias: bool,
    redundant_affine: bool = False,
    use_mean: bool = True,
) -> tuple[bool, bool]:
    """``(use_scale, use_bias)`` of a BatchNorm that feeds SBN directly.

    SBN's training-mode output does not change when a channel of its input is
    multiplied by a positive constant (up to ``epsilon``): the spectral variance
    divides it out. With per-frequency statistics it does not change either when
    a constant is added to a channel: that only moves the DC bin, whose batch
    mean is subtracted. So the BatchNorm's scale is redundant before SBN, and
    with per-frequency statistics its bias too: their exact gradient is zero,
    their float32 gradient is rounding noise, and, with weight decay on kernels
    only, nothing holds them (they random-walk with the rounding, and the
    running statistics then carry the walk into eval). Without them the pair
    computes the same functions (a BatchNorm scale ``g > 0`` and bias ``b`` act
    as a bias ``b / g``; a negative ``g`` as a sign flip of SBN's scale).

    Under the ablations the scale stays redundant (without the division it
    multiplies SBN's own scale, or, with ``use_scale=False``, is absent anyway),
    and the bias is kept whenever SBN does not subtract a per-frequency mean.

    Args:
      per_frequency: the SBN's statistics.
      use_scale: the caller's ``use_scale`` for both layers.
      use_bias: the caller's ``use_bias`` for both layers.
      redundant_affine: keep the BatchNorm's affine map as asked, as in the
        paper's PyTorch layers (whose recipes decay every parameter, which pins
        the redundant directions).
      use_mean: the SBN subtracts its mean (see :func:`spectral_batch_norm`).

    Returns:
      The BatchNorm's ``(use_scale, use_bias)``.
    """
    if redundant_affine:
        return use_scale, use_bias
    return False, use_bias and not (per_frequency and use_mean)


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The real dtype the spectrum is computed in: float32, or float64 for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


def _use_matmul(shape: Sequence[int], layout: Layout) -> bool:
    on_accelerator = jax.default_backend() in ("gpu", "tpu", "cuda", "rocm")
    return on_accelerator and all(shape[i] <= MATMUL_MAX_SIZE for i in layout.spatial_axes)


def resolve_impl(
    impl: str,
    per_frequency: bool,
    shape: Sequence[int],
    layout: Layout,
    separate_real_imag: bool = False,
) -> str:
    """The concrete implementation ``"auto"`` stands for (see the module docstring)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}.")
    if impl == "closed_form" and (per_frequency or separate_real_imag):
        what = "per_frequency=True" if per_frequency else "separate_real_imag=True"
        raise ValueError(
            'impl="closed_form" exists for joint channel statistics only; '
            f'{what} needs impl="fft", "matmul" or "auto".'
        )
    if impl != "auto":
        return impl
    if not per_frequency and not separate_real_imag:
        return "closed_form"
    return "matmul" if _use_matmul(shape, layout) else "fft"


def spectral_batch_norm(
    x: jax.Array,
    *,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    running: Statistics | None = None,
    use_running_average: bool = False,
    axis: int = -1,
    spatial_axes: Sequence[int] | None = None,
    per_frequency: bool = False,
    fft_norm: str = "backward",
    epsilon: float = 1e-5,
    axis_name: Any = None,
    axis_index_groups: Any = None,
    impl: str = "auto",
    dtype: Any = None,
    use_mean: bool = True,
    divide_by: str = "std",
    separate_real_imag: bool = False,
) -> tuple[jax.Array, Statistics]:
    """Spectral Batch Normalization of ``x``.

    Args:
      x: real floating input, e.g. ``(N, H, W, C)``; bfloat16 is fine, the
        spectrum is computed in float32.
      scale: ``(C,)`` multiplier, or None for 1.
      bias: ``(C,)`` real offset added to every bin, or None for 0.
      running: running statistics, needed when ``use_running_average``.
      use_running_average: normalize with ``running`` instead of batch statistics.
      axis: the feature axis.
      spatial_axes: transformed axes (see :func:`resolve_layout`).
      per_frequency: one statistic per (bin, channel) instead of per channel.
      fft_norm: ``"backward"`` (the paper's convention), ``"ortho"`` or
        ``"forward"``, used by both transforms so that they are an exact
        inverse pair. With "backward" the output's RMS is about
        ``scale / sqrt(n)`` for ``n`` spatial positions; with "ortho" about
        ``scale``.
      epsilon: added to the variance.
      axis_name: pmap/shard_map axis for cross-device statistics.
      axis_index_groups: device groups for the statistics.
      impl: ``"auto"``, ``"fft"``, ``"closed_form"`` or ``"matmul"`` (see the
        module docstring); all compute the same function.
      dtype: output dtype; default the input's.
      use_mean: subtract the spectral mean (False: the paper's ablation
        "dividing by the standard deviation only").
      divide_by: ``"std"`` (the paper), ``"constant"`` (divide every bin by
        :func:`white_spectrum_std` instead, a fixed down-scale of the spectrum;
        with an exact inverse pair that is the feature map times ``1/sqrt(n)``
        under "backward": the ablation "only down-scaling the spectrum"), or
        ``"none"`` (with ``use_mean``: "subtracting the mean only"; without:
        only the affine map, "gamma/beta weighting alone"). The statistics are
        computed and returned in every case.
      separate_real_imag: normalize real and imaginary parts with their own
        variances (the paper's ablation; it reports that this hurts). Needs
        ``divide_by="std"``; the statistics then carry ``var_imag``.

    Returns:
      ``(y, stats)``: ``y`` with the shape of ``x`` and the statistics used:
      the batch's in training (to feed :func:`update_running_statistics`), or
      ``running`` when ``use_running_average``.
    """
    _check_input(x)
    _check_fft_norm(fft_norm)
    check_ablation(divide_by, separate_real_imag)
    layout = resolve_layout(x.ndim, axis, spatial_axes)
    impl = resolve_impl(impl, per_frequency, x.shape, layout, separate_real_imag)
    dtype = x.dtype if dtype is None else dtype
    stats_shape = statistics_shape(x.shape, layout, per_frequency)
    if use_running_average:
        if running is None:
            raise ValueError("use_running_average=True needs running statistics; got None.")
        if tuple(running.var.shape) != stats_shape:
            raise ValueError(
                f"Running statistics of shape {tuple(running.var.shape)} do not fit an input of "
                f"shape {tuple(x.shape)}: expected {stats_shape}. Per-frequency statistics only "
                "apply to the spatial size they were computed for."
            )
        if (running.var_imag is not None) != separate_real_imag:
            raise ValueError(
                f"separate_real_imag={separate_real_imag} needs running statistics "
                f"{'with' if separate_real_imag else 'without'} var_imag; got "
                f"var_imag={'None' if running.var_imag is None else 'an array'}."
            )
    else:
        group = _reduction_group_size(axis_name, axis_index_groups)
        _check_statistic_count(x.shape, layout, per_frequency, group)
    stats = running if use_running_average else None
    xc = x.astype(compute_dtype(x.dtype))
    spatial_size = math.prod(x.shape[i] for i in layout.spatial_axes)
    ablation = dict(
        use_mean=use_mean,
        divide_by=divide_by,
        constant_std=white_spectrum_std(fft_norm, spatial_size),
    )

    if impl == "closed_form":
        if stats is None:
            moments = _closed_form.moments(xc, layout, fft_norm)
            mean_real, mean_imag, mean_square = _pmean(moments, axis_name, axis_index_groups)
            var = _closed_form.variance(mean_real, mean_imag, mean_square)
            stats = Statistics(mean_real, mean_imag, var)
        y = _closed_form.apply(xc, stats, scale, bias, layout, fft_norm, epsilon, **ablation)
        return y.astype(dtype), stats

    options = dict(
        scale=scale,
        bias=bias,
        per_frequency=per_frequency,
        fft_norm=fft_norm,
        epsilon=epsilon,
        axis_name=axis_name,
        axis_index_groups=axis_index_groups,
        separate_real_imag=separate_real_imag,
        **ablation,
    )
    if impl == "matmul":
        y, stats = _through_spectrum(xc, stats, layout, _dft.rfftn, _dft.irfftn, **options)
    else:
        y, stats = _through_fft(xc, stats, layout, **options)
    return y.astype(dtype), stats


def _through_spectrum(
    x,
    stats,
    layout,
    forward,
    inverse,
    *,
    scale,
    bias,
    per_frequency,
    fft_norm,
    epsilon,
    axis_name,
    axis_index_groups,
    separate_real_imag,
    **ablation,
):
    """Steps 1-4 of the module docstring with the transform pair ``forward``/``inverse``."""
    spectrum = forward(x, layout.spatial_axes, fft_norm)
    if stats is None:
        stats = spectrum_statistics(
            spectrum, layout, per_frequency, axis_name, axis_index_groups, separate_real_imag
        )
    normalized = normalize_spectrum(
        spectrum, stats, scale, bias, layout, per_frequency, epsilon, **ablation
    )
    sizes = tuple(x.shape[i] for i in layout.spatial_axes)
    return inverse(normalized, layout.spatial_axes, sizes, fft_norm), stats


def _through_fft(x, stats, layout, *, per_frequency, **options):
    """:func:`_through_spectrum` with ``jnp.fft``, on ``x`` arranged as (*batch, feature, *spatial).

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
    if stats is not None and per_frequency:
        stats = _transpose_all(stats, stats_to_moved)
    y, stats = _through_spectrum(
        jnp.transpose(x, order),
        stats,
        moved,
        _fft_rfftn,
        _fft_irfftn,
        per_frequency=per_frequency,
        **options,
    )
    if per_frequency:
        stats = _transpose_all(stats, _inverse(stats_to_moved))
    return jnp.transpose(y, _inverse(order)), stats


def _inverse(permutation: Sequence[int]) -> tuple[int, ...]:
    return tuple(permutation.index(i) for i in range(len(permutation)))


def _transpose_all(stats: Statistics, permutation: tuple[int, ...]) -> Statistics:
    return jax.tree.map(lambda s: jnp.transpose(s, permutation), stats)


# Both transforms take their axes last (see _through_fft) and see a (batch, *signal) operand:
# with several leading axes, XLA's CPU FFT fails a layout check (RET_CHECK in fft_thunk.cc) on
# batch-sharded inputs under jit (jax 0.10.2, tests/test_multidevice.py).
def _flat_leading(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, tuple[int, ...]]:
    """Merges the axes before ``axes`` (which must be the last ones) into one.

    Returns the merged array and the merged axes' old shape.
    """
    assert axes == tuple(range(x.ndim - len(axes), x.ndim)), (x.shape, axes)
    lead = x.shape[: x.ndim - len(axes)]
    return x.reshape(math.prod(lead), *x.shape[x.ndim - len(axes) :]), lead


def _fft_rfftn(x: jax.Array, axes: tuple[int, ...], norm: str) -> jax.Array:
    flat, lead = _flat_leading(x, axes)
    spectrum = jnp.fft.rfftn(flat, axes=tuple(range(1, flat.ndim)), norm=norm)
    return spectrum.reshape(*lead, *spectrum.shape[1:])


def _fft_irfftn(spectrum: jax.Array, axes: tuple[int, ...], sizes: tuple[int, ...], norm: str):
    flat, lead = _flat_leading(spectrum, axes)
    y = jnp.fft.irfftn(flat, s=sizes, axes=tuple(range(1, flat.ndim)), norm=norm)
    return y.reshape(*lead, *y.shape[1:])
