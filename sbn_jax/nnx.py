"""Flax NNX modules: SpectralBatchNorm and SpatialSpectralBatchNorm.

Same numerics as :mod:`sbn_jax.linen`; running statistics are ``nnx.BatchStat``
variables, and ``model.train()`` / ``model.eval()`` switch
``use_running_average`` as they do for ``nnx.BatchNorm``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sbn_jax import family, functional
from sbn_jax._nnx_common import NO_METADATA, ONES, ZEROS, Affine, affine_values, check_fits
from sbn_jax.options import SBNOptions

Dtype = Any
Initializer = Any


def _statistics_shape(
    num_features: int,
    per_frequency: bool,
    spatial_shape: Sequence[int] | None,
    axis: int,
    spatial_axes: Sequence[int] | None,
    input_ndim: int | None,
) -> tuple[int, ...]:
    """Shape of the running statistics, known before any input is seen."""
    if not per_frequency:
        return (num_features,)
    if spatial_shape is None:
        raise ValueError(
            "per_frequency=True needs spatial_shape=(sizes of the spatial axes, e.g. (H, W)) "
            "to size its statistics."
        )
    spatial_shape = tuple(spatial_shape)
    if input_ndim is None:
        if spatial_axes is not None:
            raise ValueError(
                "per_frequency=True with explicit spatial_axes needs input_ndim= (the rank of "
                "the inputs) to place the statistics' axes."
            )
        input_ndim = len(spatial_shape) + 2
    layout = functional.resolve_layout(input_ndim, axis, spatial_axes)
    if len(layout.spatial_axes) != len(spatial_shape):
        raise ValueError(
            f"spatial_shape {spatial_shape} has {len(spatial_shape)} sizes but the layout has "
            f"{len(layout.spatial_axes)} spatial axes {layout.spatial_axes}."
        )
    shape = [1] * input_ndim
    shape[layout.feature_axis] = num_features
    for i, size in zip(layout.spatial_axes, spatial_shape, strict=True):
        shape[i] = size
    return functional.statistics_shape(shape, layout, True)


class SpectralBatchNorm(nnx.Module):
    """Spectral Batch Normalization for Flax NNX.

    Args:
      num_features: number of channels C.
      use_running_average: normalize with the running statistics (eval);
        switched by ``model.train()`` / ``model.eval()``.
      axis: the feature axis (-1 for NHWC, 1 for NCHW).
      spatial_axes: axes to transform; default all but axis 0 and ``axis``.
      per_frequency: one statistic per (frequency bin, channel).
      spatial_shape: sizes of the spatial axes, e.g. ``(H, W)``; needed with
        ``per_frequency=True`` to size the statistics.
      input_ndim: rank of the inputs; needed only with ``per_frequency=True``
        and explicit ``spatial_axes``.
      momentum, running_variance, param_dtype, use_bias, use_scale, bias_init,
      scale_init, complex_affine: as in :class:`sbn_jax.linen.SpectralBatchNorm`.
      bias_metadata, scale_metadata: metadata of the ``bias``/``scale``
        ``nnx.Param`` (and of their imaginary parts), as in ``nnx.BatchNorm``:
        e.g. ``{"out_sharding": ("model",)}``, read by ``nnx.get_partition_spec``.
      rngs: random keys for the parameter initializers.
      **options: fields of :class:`sbn_jax.SBNOptions` (``axis``,
        ``per_frequency``, ``fft_norm``, ...), validated here and kept as
        ``.options``.

    Variables: ``scale``, ``bias`` (``nnx.Param``, shape ``(C,)``) and
    ``mean_real``, ``mean_imag``, ``var`` (``nnx.BatchStat``, float32; with
    ``separate_real_imag`` also ``var_imag``, otherwise ``var_imag`` is None).

    Calling it raises ``ValueError`` when the input's feature size is not
    ``num_features``, or (per frequency) its spatial sizes are not
    ``spatial_shape``; otherwise as :class:`sbn_jax.linen.SpectralBatchNorm`.
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool = False,
        spatial_shape: Sequence[int] | None = None,
        input_ndim: int | None = None,
        momentum: float = 0.99,
        running_variance: str = "biased",
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        complex_affine: bool = False,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        self.options = SBNOptions.build(None, options)
        per_frequency = self.options.per_frequency
        shape = _statistics_shape(
            num_features,
            per_frequency,
            spatial_shape,
            self.options.axis,
            self.options.spatial_axes,
            input_ndim,
        )
        initial = functional.init_statistics(shape, self.options.separate_real_imag)
        self.mean_real = nnx.BatchStat(initial.mean_real)
        self.mean_imag = nnx.BatchStat(initial.mean_imag)
        self.var = nnx.BatchStat(initial.var)
        separate = self.options.separate_real_imag
        self.var_imag = nnx.BatchStat(initial.var_imag) if separate else nnx.data(None)
        affine = Affine(
            use_scale,
            use_bias,
            scale_init,
            bias_init,
            param_dtype,
            scale_metadata,
            bias_metadata,
            complex_affine,
        )
        affine.make(self, num_features, rngs)
        self.num_features = num_features
        self.use_running_average = use_running_average
        self.spatial_shape = None if spatial_shape is None else tuple(spatial_shape)
        self.momentum = momentum
        self.running_variance = running_variance

    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Normalizes ``x``; the call argument overrides the attribute.

        ``mask`` selects the examples the batch statistics (and so the running
        averages) come from, as in ``nnx.BatchNorm``; see
        :func:`sbn_jax.functional.spectral_batch_norm` for its shapes.
        """
        layout = self._check_fits(x)
        if use_running_average is None:
            use_running_average = self.use_running_average
        running = functional.Statistics(
            self.mean_real[...],
            self.mean_imag[...],
            self.var[...],
            None if self.var_imag is None else self.var_imag[...],
        )
        scale, bias = affine_values(self)
        y, updated = functional.apply_with_running_statistics(
            x,
            running,
            scale=scale,
            bias=bias,
            use_running_average=use_running_average,
            momentum=self.momentum,
            running_variance=self.running_variance,
            options=self.options,
            mask=mask,
            layout=layout,
        )
        if not use_running_average:
            self.mean_real[...], self.mean_imag[...], self.var[...] = updated[:3]
            if self.var_imag is not None:
                self.var_imag[...] = updated.var_imag
        return y

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: sets ``use_running_average`` when given."""
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def _check_fits(self, x: jax.Array, name: str | None = None) -> functional.Layout:
        """``x``'s layout; refuses an input of another feature size or (per frequency) spatial
        size."""
        return check_fits(
            name or type(self).__name__,
            x,
            self.num_features,
            self.options.axis,
            self.options.spatial_axes,
            self.spatial_shape if self.options.per_frequency else None,
        )


class SpatialSpectralBatchNorm(nnx.Module):
    """``nnx.BatchNorm`` followed by :class:`SpectralBatchNorm`.

    Takes the arguments of :class:`SpectralBatchNorm`; ``momentum``,
    ``epsilon``, ``dtype``, ``param_dtype``, ``use_bias``, ``use_scale``,
    ``bias_init``, ``scale_init``, ``bias_metadata``, ``scale_metadata``,
    ``axis``, ``axis_name`` and ``axis_index_groups`` apply to both layers,
    available as ``.batch_norm`` and ``.spectral_batch_norm``;
    ``spectral_scale_init``, when given, replaces ``scale_init`` for the SBN
    layer only. As in
    :class:`sbn_jax.linen.SpatialSpectralBatchNorm`, the BatchNorm drops the
    affine parameters that SBN makes redundant unless ``redundant_affine=True``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool = False,
        momentum: float = 0.99,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        spectral_scale_init: Initializer | None = None,
        redundant_affine: bool = False,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
        rngs: nnx.Rngs,
        **spectral_options: Any,
    ):
        names = SBNOptions.names()
        options = SBNOptions.build(None, {k: v for k, v in spectral_options.items() if k in names})
        shared = dict(
            use_running_average=use_running_average,
            momentum=momentum,
            param_dtype=param_dtype,
            bias_init=bias_init,
            scale_init=scale_init,
            bias_metadata=bias_metadata,
            scale_metadata=scale_metadata,
            rngs=rngs,
        )
        bn_scale, bn_bias = functional.batch_norm_affine_before_sbn(
            options.per_frequency, use_scale, use_bias, redundant_affine, options.use_mean
        )
        self.batch_norm = nnx.BatchNorm(
            num_features,
            use_scale=bn_scale,
            use_bias=bn_bias,
            axis=options.axis,
            epsilon=options.epsilon,
            dtype=options.dtype,
            axis_name=options.axis_name,
            axis_index_groups=options.axis_index_groups,
            **shared,
        )
        if spectral_scale_init is not None:
            shared["scale_init"] = spectral_scale_init
        self.spectral_batch_norm = SpectralBatchNorm(
            num_features, use_scale=use_scale, use_bias=use_bias, **shared, **spectral_options
        )

    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """BatchNorm, then SBN; same shape out. ``mask`` goes to both layers.

        Raises ``ValueError`` as :class:`SpectralBatchNorm` does; the
        BatchNorm's statistics are then left as they were.
        """
        # Checked before the BatchNorm, whose own error on a wrong feature size is a broadcast.
        self.spectral_batch_norm._check_fits(x, type(self).__name__)
        if mask is not None:
            functional.check_mask(mask, x, self.spectral_batch_norm.options)
        # Outside nnx.jit the BatchNorm updates its statistics before SBN checks the batch: a
        # batch SBN refuses (an empty one would leave NaN) must not change them. The values are
        # copied: nnx.state holds the variables themselves, which the call overwrites.
        before = nnx.to_pure_dict(nnx.state(self.batch_norm, nnx.BatchStat))
        x = self.batch_norm(x, use_running_average=use_running_average, mask=mask)
        try:
            return self.spectral_batch_norm(x, use_running_average=use_running_average, mask=mask)
        except ValueError:
            nnx.update(self.batch_norm, before)
            raise


class SpectralGroupNorm(nnx.Module):
    """Spectral Group Normalization for Flax NNX (see :mod:`sbn_jax.family`).

    Args:
      num_features: number of channels C.
      num_groups: the number of channel groups (default 32, as ``nnx.GroupNorm``),
        or None with ``group_size``.
      group_size: the channels per group, or None.
      axis, spatial_axes, fft_norm, epsilon, dtype, param_dtype, use_bias,
      use_scale, bias_init, scale_init, complex_affine, impl: as in
        :class:`sbn_jax.linen.SpectralGroupNorm`.
      bias_metadata, scale_metadata: as in :class:`SpectralBatchNorm`.
      rngs: random keys for the parameter initializers.

    Variables: ``scale``, ``bias`` (``nnx.Param``, shape ``(C,)``); no
    statistics are kept, and training and evaluation compute the same function.
    """

    def __init__(
        self,
        num_features: int,
        *,
        num_groups: int | None = 32,
        group_size: int | None = None,
        axis: int = -1,
        spatial_axes: Sequence[int] | None = None,
        fft_norm: str = "backward",
        epsilon: float = 1e-5,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Initializer = ZEROS,
        scale_init: Initializer = ONES,
        complex_affine: bool = False,
        impl: str = "auto",
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
        rngs: nnx.Rngs,
    ):
        family.resolve_groups(num_features, num_groups, group_size)
        affine = Affine(
            use_scale,
            use_bias,
            scale_init,
            bias_init,
            param_dtype,
            scale_metadata,
            bias_metadata,
            complex_affine,
        )
        affine.make(self, num_features, rngs)
        self.num_features = num_features
        self.num_groups, self.group_size = num_groups, group_size
        self.axis = axis
        self.spatial_axes = None if spatial_axes is None else tuple(spatial_axes)
        self.fft_norm = fft_norm
        self.epsilon = epsilon
        self.dtype = dtype
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalizes each example's spectrum with its own statistics; same shape out.

        Raises ``ValueError`` when the input's feature size is not
        ``num_features``; otherwise as :func:`sbn_jax.family.spectral_group_norm`.
        """
        check_fits(type(self).__name__, x, self.num_features, self.axis, self.spatial_axes)
        scale, bias = affine_values(self)
        return family.spectral_group_norm(
            x,
            num_groups=self.num_groups,
            group_size=self.group_size,
            scale=scale,
            bias=bias,
            **{name: getattr(self, name) for name in family.MODULE_OPTIONS},
        )


class SpectralLayerNorm(SpectralGroupNorm):
    """Spectral Layer Normalization (one group); arguments as :class:`SpectralGroupNorm`."""

    def __init__(self, num_features: int, *, rngs: nnx.Rngs, **options: Any):
        super().__init__(num_features, num_groups=1, group_size=None, rngs=rngs, **options)


class SpectralInstanceNorm(SpectralGroupNorm):
    """Spectral Instance Normalization (one channel a group); as :class:`SpectralGroupNorm`."""

    def __init__(self, num_features: int, *, rngs: nnx.Rngs, **options: Any):
        super().__init__(num_features, num_groups=None, group_size=1, rngs=rngs, **options)
