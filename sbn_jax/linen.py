"""Flax linen modules: SpectralBatchNorm, SpatialSpectralBatchNorm and the per-example norms."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbn_jax import family, functional
from sbn_jax.options import SBNOptions

Dtype = Any
Initializer = Any


def _attributes_of_options() -> dict[str, Any]:
    """The class body that gives a linen module one attribute per :class:`SBNOptions` field.

    ``use_running_average`` comes first, as in ``nn.BatchNorm``.
    """
    fields = dataclasses.fields(SBNOptions)
    annotations = {"use_running_average": "bool | None", **{f.name: f.type for f in fields}}
    defaults = {"use_running_average": None, **{f.name: f.default for f in fields}}
    return {"__annotations__": annotations, "__module__": __name__, **defaults}


# Any, because mypy cannot see attributes made at run time; the modules read them by name.
_OptionAttributes: Any = types.new_class(
    "_OptionAttributes", (nn.Module,), exec_body=lambda ns: ns.update(_attributes_of_options())
)


class _SpectralOptions(_OptionAttributes):
    """The attributes shared by both modules; documented on :class:`SpectralBatchNorm`.

    Those of :class:`~sbn_jax.SBNOptions` come from its fields; these are the modules' own.
    """

    momentum: float = 0.99
    running_variance: str = "biased"
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = jax.nn.initializers.zeros
    scale_init: Initializer = jax.nn.initializers.ones
    complex_affine: bool = False

    def sbn_options(self) -> SBNOptions:
        """The module's :class:`~sbn_jax.SBNOptions` (validated here, on each call)."""
        return SBNOptions(**{name: getattr(self, name) for name in SBNOptions.names()})


def _affine_params(module: Any, features: int) -> tuple[jax.Array | None, jax.Array | None]:
    """A module's per-channel ``scale`` and ``bias`` (None where it has none).

    With ``complex_affine`` each is ``real + 1j * imag`` of two real params, the
    imaginary ones (``scale_imag``, ``bias_imag``) starting at zero, so that a
    new complex map starts as the real one.
    """

    def make(name: str, use: bool, init: Initializer) -> jax.Array | None:
        if not use:
            return None
        value = module.param(name, init, (features,), module.param_dtype)
        if module.complex_affine:
            imag = module.param(
                f"{name}_imag", jax.nn.initializers.zeros, (features,), module.param_dtype
            )
            value = jax.lax.complex(value, imag)
        return value

    return (
        make("scale", module.use_scale, module.scale_init),
        make("bias", module.use_bias, module.bias_init),
    )


class SpectralBatchNorm(_SpectralOptions):
    """Spectral Batch Normalization (Cakaj et al., IJCNN 2023) for flax.linen.

    Normalizes ``rfftn(x)`` over the batch (and, with channel statistics, over
    all frequency bins), applies a per-channel affine map and transforms back;
    see :mod:`sbn_jax.functional` for the math. Use it like ``nn.BatchNorm``::

        y = SpectralBatchNorm(use_running_average=not train)(x)

    Running statistics live in the ``batch_stats`` collection as ``mean_real``,
    ``mean_imag`` and ``var`` (float32; shape ``(C,)``, or per frequency the
    spectrum's shape without batch axes). ``init`` never computes batch
    statistics: it normalizes with the initial running statistics, so that any
    batch size, even 1, initializes. Training refuses an empty batch (its
    statistics would be NaN, and the running averages with them); with
    ``use_running_average`` an empty batch gives an empty output. Bad inputs
    and options raise the errors listed under "Errors" in
    :mod:`sbn_jax.functional`.

    Attributes:
      use_running_average: normalize with the running statistics (eval).
      (every option): one attribute per field of :class:`sbn_jax.SBNOptions`,
        with its default (``axis``, ``per_frequency``, ``fft_norm``,
        ``epsilon``, ``impl``, the ablations, ...), documented there.
      momentum: decay of the running average, in [0, 1] (Flax convention;
        PyTorch's and the paper's momentum is ``1 - momentum``); checked on the
        first training step, where it is used.
      running_variance: "biased" (the batch variance, as Flax's BatchNorm) or
        "paper" (Algorithm 1: times ``n / (n - 1)``, ``n = C * H * W / 2``;
        channel statistics only).
      param_dtype: dtype of ``scale`` and ``bias``.
      use_bias: learn a per-channel bias (added to the real part of every bin).
      use_scale: learn a per-channel scale.
      bias_init: initializer of ``bias``.
      scale_init: initializer of ``scale``.
      complex_affine: a complex per-channel scale and bias, stored as the real
        params ``scale``, ``bias`` and ``scale_imag``, ``bias_imag`` (these
        start at 0). It can rotate the phase of every bin of a channel: a mix
        of the feature map and its Hilbert transform along the last spatial
        axis, which no real affine map gives. The inverse real transform drops
        the imaginary parts of the self-conjugate bins (last-axis bin 0, and
        ``n/2`` for even sizes). Uses the transform (``impl`` "fft"/"matmul").
    """

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """Normalizes ``x`` (any layout with one feature and >= 1 spatial axis); same shape out.

        ``mask`` selects the examples the batch statistics (and so the running
        averages) come from, as in ``nn.BatchNorm``; see
        :func:`sbn_jax.functional.spectral_batch_norm` for its shapes.
        """
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        options = self.sbn_options()
        layout = functional.resolve_layout(x.ndim, options.axis, options.spatial_axes)
        initial = functional.init_statistics(
            functional.statistics_shape(x.shape, layout, options.per_frequency),
            options.separate_real_imag,
        )
        running = {
            name: self.variable("batch_stats", name, lambda v=value: v)
            for name, value in initial._asdict().items()
            if value is not None
        }
        scale, bias = _affine_params(self, x.shape[layout.feature_axis])
        # init never computes batch statistics, so that any batch, even one example, initializes.
        use_running_average = use_running_average or self.is_initializing()
        y, updated = functional.apply_with_running_statistics(
            x,
            functional.Statistics(**{k: v.value for k, v in running.items()}),
            scale=scale,
            bias=bias,
            use_running_average=use_running_average,
            momentum=self.momentum,
            running_variance=self.running_variance,
            options=options,
            mask=mask,
            layout=layout,
        )
        if not use_running_average:
            for name, variable in running.items():
                variable.value = getattr(updated, name)
        return y


class SpatialSpectralBatchNorm(_SpectralOptions):
    """``flax.linen.BatchNorm`` followed by :class:`SpectralBatchNorm`, as in the paper.

    Takes the attributes of :class:`SpectralBatchNorm`; ``momentum``,
    ``epsilon``, ``dtype``, ``param_dtype``, ``use_bias``, ``use_scale``,
    ``axis``, ``axis_name`` and ``axis_index_groups`` apply to both layers
    (``use_bias``/``use_scale`` to the BatchNorm only where SBN does not make
    them redundant, see below).
    Parameters and statistics sit under the submodules ``BatchNorm_0`` and
    ``SpectralBatchNorm_0``. ``spectral_scale_init``, when given, replaces
    ``scale_init`` for the SBN layer only (e.g. zeros at the end of a residual
    branch).

    The BatchNorm has no scale, and with per-frequency statistics no bias
    either: SBN's invariances make them redundant (see
    :func:`sbn_jax.functional.batch_norm_affine_before_sbn`; the function class
    is the same). ``redundant_affine=True`` keeps them, as the paper's PyTorch
    layers do; train it with weight decay on every parameter, as the paper did.
    """

    spectral_scale_init: Initializer | None = None
    redundant_affine: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """BatchNorm, then SBN; same shape out. ``mask`` goes to both (see SpectralBatchNorm)."""
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        shared = dict(
            axis=self.axis,
            momentum=self.momentum,
            epsilon=self.epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            bias_init=self.bias_init,
            scale_init=self.scale_init,
            axis_name=self.axis_name,
            axis_index_groups=self.axis_index_groups,
        )
        if mask is not None:
            functional.check_mask(mask, x, self.sbn_options())
        bn_scale, bn_bias = functional.batch_norm_affine_before_sbn(
            self.per_frequency,
            self.use_scale,
            self.use_bias,
            self.redundant_affine,
            use_mean=self.use_mean,
        )
        x = nn.BatchNorm(use_scale=bn_scale, use_bias=bn_bias, **shared)(
            x, use_running_average=use_running_average, mask=mask
        )
        options = {name: getattr(self, name) for name in _spectral_option_names()}
        if self.spectral_scale_init is not None:
            options["scale_init"] = self.spectral_scale_init
        return SpectralBatchNorm(**options)(x, use_running_average=use_running_average, mask=mask)


def _spectral_option_names() -> tuple[str, ...]:
    """The attributes of :class:`SpectralBatchNorm` a pair passes on (all but the mode)."""
    skip = ("parent", "name", "use_running_average")
    return tuple(f.name for f in dataclasses.fields(_SpectralOptions) if f.name not in skip)


class _SpectralPerExampleNorm(nn.Module):
    """Fields shared by the per-example spectral norms; see :mod:`sbn_jax.family`.

    They keep no statistics, so an empty batch is harmless: it gives an empty
    output. Bad inputs raise as :func:`sbn_jax.family.spectral_group_norm`.

    Attributes:
      axis: the feature axis (-1 for NHWC, 1 for NCHW).
      spatial_axes: axes to transform; default all but axis 0 and ``axis``.
      fft_norm: "backward" (the paper's), "ortho" or "forward".
      epsilon: added to the variance; finite and >= 0.
      dtype: output dtype; default the input's. Spectra are float32.
      param_dtype: dtype of ``scale`` and ``bias``.
      use_bias: learn a per-channel bias (added to the real part of every bin).
      use_scale: learn a per-channel scale.
      bias_init: initializer of ``bias``.
      scale_init: initializer of ``scale``.
      complex_affine: a complex per-channel scale and bias, as in
        :class:`SpectralBatchNorm`.
      impl: "auto" (the closed form with a real affine map, else the
        transforms), "closed_form" or "fft"; see :mod:`sbn_jax.family`.
    """

    axis: int = -1
    spatial_axes: Sequence[int] | None = None
    fft_norm: str = "backward"
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True
    use_scale: bool = True
    bias_init: Initializer = jax.nn.initializers.zeros
    scale_init: Initializer = jax.nn.initializers.ones
    complex_affine: bool = False
    impl: str = "auto"

    def groups(self) -> tuple[int | None, int | None]:
        """``(num_groups, group_size)``, one of them None."""
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalizes each example's spectrum with its own statistics; same shape out."""
        layout = functional.resolve_layout(x.ndim, self.axis, self.spatial_axes)
        scale, bias = _affine_params(self, x.shape[layout.feature_axis])
        num_groups, group_size = self.groups()
        return family.spectral_group_norm(
            x,
            num_groups=num_groups,
            group_size=group_size,
            scale=scale,
            bias=bias,
            **{name: getattr(self, name) for name in family.MODULE_OPTIONS},
        )


class SpectralGroupNorm(_SpectralPerExampleNorm):
    """Spectral Group Normalization: per example, over the bins and channels of each group.

    As ``nn.GroupNorm``: give ``num_groups`` (default 32) or ``group_size``
    with ``num_groups=None``. Other attributes as :class:`_SpectralPerExampleNorm`;
    no running statistics, the same in training and evaluation.
    """

    num_groups: int | None = 32
    group_size: int | None = None

    def groups(self) -> tuple[int | None, int | None]:
        return self.num_groups, self.group_size


class SpectralLayerNorm(_SpectralPerExampleNorm):
    """Spectral Layer Normalization: per example, over all bins and channels."""

    def groups(self) -> tuple[int | None, int | None]:
        return 1, None


class SpectralInstanceNorm(_SpectralPerExampleNorm):
    """Spectral Instance Normalization: per example and channel, over all bins."""

    def groups(self) -> tuple[int | None, int | None]:
        return None, 1
