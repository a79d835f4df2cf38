"""Per-example spectral normalizations: the spectral Layer, Group and Instance Norm.

The paper names spectral versions of Layer, Group and Instance Normalization
as future work. Each normalizes the spectrum of every example with that
example's own statistics, so they need no batch statistics and no running
averages, and they compute the same function in training and evaluation:

1. ``X = rfftn(x, axes=spatial, norm=fft_norm)`` (float32, or float64 inputs),
2. per example and per group of channels, over the group's channels and all
   frequency bins: a complex mean ``mu`` and a real, biased variance
   ``var = mean(|X - mu|**2)``; one group of all channels is the layer norm,
   one channel per group the instance norm,
3. ``Y = scale * (X - mu) / sqrt(var + epsilon) + bias`` with a scale and a
   bias per channel: real (the bias lands on the real part of every bin), or
   complex (``complex_affine`` in the modules; see :mod:`sbn_jax.linen`),
4. ``y = irfftn(Y, s=spatial sizes, axes=spatial, norm=fft_norm)``.

Layouts are those of :func:`sbn_jax.functional.spectral_batch_norm` (``axis``,
``spatial_axes``; every other axis is a batch axis, over which nothing is
averaged). An empty batch (a batch axis of size 0) has no statistics to get
wrong, since none are kept: it gives an empty output, in training as in
evaluation. As with SBN's channel statistics, under "backward" the output has
RMS about ``scale / sqrt(n)`` for ``n`` spatial positions.

Closed form. With a real affine map, steps 1-4 need no transform, by the
argument of :mod:`sbn_jax._closed_form` for SBN's channel statistics: each
channel's mean over the bins and mean of ``|X|**2`` follow from sums in
space, per example here instead of over the batch; a group's statistics are
the averages of its channels' (every channel has the same bins); and the output
is ``a * x`` plus a correction of the first row, with ``a`` and the correction
per example and channel. ``impl="closed_form"`` computes that, ``impl="fft"``
steps 1-4; ``"auto"`` (the default) takes the closed form unless the scale or
bias is complex. Both compute the same function (tested to float64 rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from sbn_jax import _checks, _closed_form, _spectrum
from sbn_jax._layout import Layout, Statistics, is_complex_affine, resolve_layout, spectrum_shape
from sbn_jax.functional import compute_dtype
from sbn_jax.options import SBNOptions, check_choice

# The keyword arguments of spectral_group_norm that the Flax modules hold as attributes.
MODULE_OPTIONS = ("axis", "spatial_axes", "fft_norm", "epsilon", "dtype", "impl")
IMPLS = ("auto", "closed_form", "fft")

__all__ = [
    "IMPLS",
    "MODULE_OPTIONS",
    "resolve_groups",
    "spectral_group_norm",
    "spectral_instance_norm",
    "spectral_layer_norm",
]


def resolve_groups(num_features: int, num_groups: int | None, group_size: int | None) -> int:
    """The number of channel groups, from exactly one of ``num_groups`` and ``group_size``.

    Raises:
      ValueError: both or neither given, a non-positive value, or one that
        does not divide ``num_features``.
    """
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            "Give exactly one of num_groups and group_size; got "
            f"num_groups={num_groups!r}, group_size={group_size!r}."
        )
    if group_size is not None:
        if group_size < 1 or num_features % group_size:
            raise ValueError(
                f"group_size={group_size} must be a positive divisor of the {num_features} "
                "channels."
            )
        return num_features // group_size
    assert num_groups is not None
    if num_groups < 1 or num_features % num_groups:
        raise ValueError(
            f"num_groups={num_groups} must be a positive divisor of the {num_features} channels."
        )
    return num_groups


def _check_count(shape: Sequence[int], layout: Layout, groups: int) -> None:
    """Refuses statistics of a single value (one bin and one channel per group) or of none."""
    _checks.check_spatial_sizes(shape, layout)
    bins = math.prod(spectrum_shape(shape, layout)[i] for i in layout.spatial_axes)
    if bins * (shape[layout.feature_axis] // groups) == 1:
        raise ValueError(
            f"Expected more than one value per statistic: an input of shape {tuple(shape)} has "
            f"one frequency bin and one channel per group ({groups} groups) to normalize over."
        )


def spectral_group_norm(
    x: jax.Array,
    *,
    num_groups: int | None = None,
    group_size: int | None = None,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    axis: int = -1,
    spatial_axes: Sequence[int] | None = None,
    fft_norm: str = "backward",
    epsilon: float = 1e-5,
    dtype: Any = None,
    impl: str = "auto",
) -> jax.Array:
    """Spectral Group Normalization of ``x`` (see the module docstring).

    Args:
      x: real floating input, e.g. ``(N, H, W, C)``; bfloat16 is fine, the
        spectrum is computed in float32.
      num_groups: the number of channel groups (1: layer norm), or None.
      group_size: the channels per group (1: instance norm), or None.
      scale: ``(C,)`` multiplier, or None for 1; complex for a complex affine map.
      bias: ``(C,)`` offset added to every bin (a real one to the real parts),
        or None for 0; complex for a complex affine map.
      axis: the feature axis.
      spatial_axes: transformed axes (see :func:`sbn_jax.functional.resolve_layout`).
      fft_norm: ``"backward"`` (the paper's), ``"ortho"`` or ``"forward"``,
        for both transforms.
      epsilon: added to the variance; finite and >= 0.
      dtype: output dtype; default the input's.
      impl: ``"auto"``, ``"closed_form"`` (a real scale and bias only) or
        ``"fft"``; see the module docstring.

    Returns:
      ``y`` with the shape of ``x`` (empty for an empty batch).

    Raises:
      TypeError: an integer or complex ``x``.
      ValueError: a bad layout or a spatial axis of size 0; bad groups (see
        :func:`resolve_groups`); a single value per statistic; an unknown
        ``fft_norm`` or ``impl``; ``epsilon`` negative or not finite.
    """
    _checks.check_input(x)
    layout = resolve_layout(x.ndim, axis, spatial_axes)
    channels = x.shape[layout.feature_axis]
    groups = resolve_groups(channels, num_groups, group_size)
    _check_count(x.shape, layout, groups)
    options = SBNOptions(fft_norm=fft_norm, epsilon=epsilon)  # Checks both.
    out_dtype = x.dtype if dtype is None else dtype
    x = x.astype(compute_dtype(x.dtype))
    if _resolve_impl(impl, scale, bias) == "closed_form":
        y = _closed_form_group_norm(x, groups, scale, bias, layout, options)
    else:
        y = _transform_group_norm(x, groups, scale, bias, layout, options)
    return y.astype(out_dtype)


def _resolve_impl(impl: str, scale: jax.Array | None, bias: jax.Array | None) -> str:
    check_choice("impl", impl, IMPLS)
    complex_affine = is_complex_affine(scale, bias)
    if impl == "closed_form" and complex_affine:
        raise ValueError(
            'impl="closed_form" needs a real scale and bias; a complex one needs impl="fft" '
            'or "auto".'
        )
    if impl == "auto":
        return "fft" if complex_affine else "closed_form"
    return impl


def _closed_form_group_norm(
    x: jax.Array,
    groups: int,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: SBNOptions,
) -> jax.Array:
    """Steps 1-4 without a transform (see the module docstring); ``x`` in the compute dtype."""
    kept = tuple(sorted((*layout.batch_axes, layout.feature_axis)))
    channels = kept.index(layout.feature_axis)
    per_channel = _closed_form.moments(x, layout, options.fft_norm, kept)
    mean_real, mean_imag, mean_square = (_group_mean(m, channels, groups) for m in per_channel)
    stats = Statistics(
        mean_real, mean_imag, _closed_form.variance(mean_real, mean_imag, mean_square)
    )
    return _closed_form.apply(x, stats, scale, bias, layout, options, kept)


def _group_mean(values: jax.Array, axis: int, groups: int) -> jax.Array:
    """Each value replaced by the mean over its group of ``axis`` (``groups`` equal, contiguous)."""
    shape = values.shape
    split = values.reshape(*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1 :])
    mean = jnp.mean(split, axis=axis + 1, keepdims=True)
    return jnp.broadcast_to(mean, split.shape).reshape(shape)


def _transform_group_norm(
    x: jax.Array,
    groups: int,
    scale: jax.Array | None,
    bias: jax.Array | None,
    layout: Layout,
    options: SBNOptions,
) -> jax.Array:
    """Steps 1-4 with SBN's transforms (:mod:`sbn_jax._spectrum`); ``x`` in the compute dtype."""
    # (*batch, C, *spatial): the transforms take the last axes, and the groups split the C axis.
    spectrum = _spectrum.transform_last(x, layout, options.fft_norm)
    values, moved = spectrum.values, spectrum.layout
    nb = len(moved.batch_axes)
    # The group size is spelled out: an empty batch leaves reshape nothing to infer -1 from.
    group_size = values.shape[nb] // groups
    grouped = values.reshape(*values.shape[:nb], groups, group_size, *values.shape[nb + 1 :])
    reduce = tuple(range(nb + 1, grouped.ndim))  # A group's channels and every bin.
    mean = jnp.mean(grouped, axis=reduce, keepdims=True)
    centered = grouped - mean
    var = jnp.mean(jnp.real(centered) ** 2 + jnp.imag(centered) ** 2, axis=reduce, keepdims=True)
    normalized = (centered * jax.lax.rsqrt(var + options.epsilon)).reshape(values.shape)
    # Complex scale and bias make a complex affine map.
    if scale is not None:
        normalized = normalized * _spectrum.per_channel(scale, moved, normalized.dtype)
    if bias is not None:
        normalized = normalized + _spectrum.per_channel(bias, moved, normalized.dtype)
    return _spectrum.back_to_space(spectrum, normalized, options.fft_norm)


def spectral_layer_norm(x: jax.Array, **kwargs: Any) -> jax.Array:
    """:func:`spectral_group_norm` with one group: every channel and bin of an example."""
    return spectral_group_norm(x, num_groups=1, **kwargs)


def spectral_instance_norm(x: jax.Array, **kwargs: Any) -> jax.Array:
    """:func:`spectral_group_norm` with one channel per group: every bin of a channel."""
    return spectral_group_norm(x, group_size=1, **kwargs)
