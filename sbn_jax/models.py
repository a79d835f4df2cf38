"""Image classifiers with a normalization switch: ResNets, CIFAR ResNets, WideResNets, VGG.

Every model is a ``flax.linen`` module called as ``model.apply(variables, x,
train=bool, mutable=["batch_stats"])`` on NHWC images ``(B, H, W, 3)`` and
returns float32 logits ``(B, num_classes)``. The ``norm`` field picks what
follows each convolution:

* ``"none"``: nothing (the convolutions get biases instead);
* ``"bn"``: ``flax.linen.BatchNorm``;
* ``"sbn"``: :class:`sbn_jax.SpectralBatchNorm` in place of BatchNorm;
* ``"bn+sbn"``: :class:`sbn_jax.SpatialSpectralBatchNorm`, BatchNorm then SBN,
  the paper's main configuration.

``sbn_stages`` restricts SBN to some stages (0-based; the ImageNet stem counts
as stage 0, a block's shortcut projection belongs to the block's stage): with
``norm`` ``"sbn"`` or ``"bn+sbn"`` the norms of the other stages are plain
BatchNorm. ``sbn_options`` go to every SBN layer (e.g. ``per_frequency``,
``fft_norm``, ``impl``; ``redundant_affine`` to every BN+SBN pair). Norm layers
use momentum 0.9 and epsilon 1e-5, the PyTorch defaults the published results
were trained with. With ``axis_name`` the batch statistics are averaged over
that pmap/shard_map axis. ``dtype`` is the computation dtype (e.g.
``jnp.bfloat16``); parameters stay float32.

Parameter counts equal the published ones (with ``norm="bn"``): ResNet-18
11,689,512, ResNet-50 25,557,032 (1000 classes), CIFAR ResNet-20 0.27M and
ResNet-110 1.7M, WRN-28-10 36.5M (10 classes). SBN has the same two vectors
per layer as BatchNorm; in ``bn+sbn`` the BatchNorm keeps only its bias (SBN
makes its scale redundant, see :class:`sbn_jax.SpatialSpectralBatchNorm`), so
``bn+sbn`` adds one vector per norm layer to ``bn`` (none with per-frequency
statistics, where the BatchNorm keeps no parameter).

``activation`` (``"relu"``, the published models' choice, ``"gelu"`` or
``"silu"``) follows every norm and every residual sum.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from sbn_jax.linen import SpatialSpectralBatchNorm, SpectralBatchNorm

NORMS = ("none", "bn", "sbn", "bn+sbn")
# ReLU is what the published models use. The smooth ones have no kink, so their gradients are
# continuous in the parameters; see README, "Reproducibility across device counts".
ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
NORM_MOMENTUM = 0.9
NORM_EPSILON = 1e-5

Dtype = Any
ModuleDef = Callable[..., nn.Module]


def stage_norm(norm: str, sbn_stages: Sequence[int] | None, stage: int) -> str:
    """The norm used in ``stage``: ``norm``, or ``"bn"`` where SBN is not wanted there."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm in ("sbn", "bn+sbn") and sbn_stages is not None and stage not in sbn_stages:
        return "bn"
    return norm


def _validate_stages(sbn_stages: Sequence[int] | None, num_stages: int, model: str) -> None:
    if sbn_stages is None:
        return
    bad = [s for s in sbn_stages if not isinstance(s, int) or not 0 <= s < num_stages]
    if bad:
        raise ValueError(
            f"sbn_stages of {model} must be stage indices in [0, {num_stages}), got "
            f"{tuple(sbn_stages)}"
        )


class Norm(nn.Module):
    """The normalization layer that ``kind`` names, or the identity for ``"none"``.

    ``zero_init`` starts the (last) scale at zero, which makes a residual
    branch start as zero; with ``"bn+sbn"`` only SBN's scale is zeroed, since
    zeroing both would leave both scales without gradient.
    """

    kind: str
    train: bool
    zero_init: bool = False
    dtype: Dtype = jnp.float32
    axis_name: str | None = None
    sbn_options: Mapping[str, Any] | None = None

    @nn.compact
    def __call__(self, x):
        if self.kind == "none":
            return x
        common = dict(
            use_running_average=not self.train,
            momentum=NORM_MOMENTUM,
            epsilon=NORM_EPSILON,
            dtype=self.dtype,
            axis_name=self.axis_name,
        )
        scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
        options = dict(self.sbn_options or {})
        if self.kind == "bn":
            return nn.BatchNorm(scale_init=scale_init, **common, name="BatchNorm")(x)
        if self.kind == "sbn":
            options.pop("redundant_affine", None)  # No BatchNorm before it.
            return SpectralBatchNorm(
                scale_init=scale_init, **common, **options, name="SpectralBatchNorm"
            )(x)
        if self.kind == "bn+sbn":
            return SpatialSpectralBatchNorm(
                spectral_scale_init=scale_init, **common, **options, name="SpatialSpectralBatchNorm"
            )(x)
        raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")


def conv(
    features: int,
    kernel: int,
    strides: int = 1,
    name: str | None = None,
    *,
    use_bias: bool,
    dtype: Dtype,
) -> nn.Conv:
    """A ``kernel x kernel`` convolution with PyTorch's symmetric padding and He-normal init."""
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        name=name,
    )


class _Classifier(nn.Module):
    """Fields and norm plumbing shared by every model."""

    num_classes: int
    norm: str = "bn"
    sbn_stages: Sequence[int] | None = None
    sbn_options: Mapping[str, Any] | None = None
    zero_init_residual: bool = False
    activation: Callable = nn.relu
    dtype: Dtype = jnp.float32
    axis_name: str | None = None

    def norm_for(self, stage: int, train: bool) -> ModuleDef:
        """A ``Norm`` constructor for a layer of ``stage``."""
        return functools.partial(
            Norm,
            kind=stage_norm(self.norm, self.sbn_stages, stage),
            train=train,
            dtype=self.dtype,
            axis_name=self.axis_name,
            sbn_options=self.sbn_options,
        )

    @property
    def conv(self) -> ModuleDef:
        """A convolution constructor ``(features, kernel, strides=1, name=None)``."""
        return functools.partial(conv, use_bias=self.norm == "none", dtype=self.dtype)

    def head(self, x):
        """Global average pool and dense layer: ``(B, H, W, C) -> (B, num_classes)``, float32."""
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
        return jnp.asarray(x, jnp.float32)

    def check_input(self, x) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects NHWC images of shape (B, H, W, C), got shape "
                f"{x.shape}"
            )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34 and CIFAR ResNets).

    ``shortcut="projection"`` uses a strided 1x1 convolution and a norm when
    the shape changes (ImageNet ResNets); ``"pad"`` subsamples and pads the new
    channels with zeros, the parameter-free option A of He et al. (2016) that
    the CIFAR ResNets use.
    """

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    zero_init: bool = False
    shortcut: str = "projection"
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.features, 3, self.strides)(x)
        y = self.activation(self.norm()(y))
        y = self.conv(self.features, 3)(y)
        y = self.norm(zero_init=self.zero_init)(y)
        if residual.shape != y.shape:
            if self.shortcut == "projection":
                residual = self.conv(self.features, 1, self.strides, name="projection")(residual)
                residual = self.norm(name="projection_norm")(residual)
            else:
                residual = residual[:, :: self.strides, :: self.strides, :]
                missing = self.features - residual.shape[-1]
                residual = jnp.pad(residual, ((0, 0), (0, 0), (0, 0), (0, missing)))
        return self.activation(y + residual)


class BottleneckBlock(nn.Module):
    """1x1, 3x3 (strided, as ResNet v1.5) and 1x1 convolutions; output ``4 * features``."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    zero_init: bool = False
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.activation(self.norm()(self.conv(self.features, 1)(x)))
        y = self.activation(self.norm()(self.conv(self.features, 3, self.strides)(y)))
        y = self.conv(4 * self.features, 1)(y)
        y = self.norm(zero_init=self.zero_init)(y)
        if residual.shape != y.shape:
            residual = self.conv(4 * self.features, 1, self.strides, name="projection")(residual)
            residual = self.norm(name="projection_norm")(residual)
        return self.activation(y + residual)


class PreActBlock(nn.Module):
    """Wide ResNet block: norm, ReLU, 3x3 conv, (dropout), norm, ReLU, 3x3 conv, shortcut."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    dropout_rate: float = 0.0
    train: bool = False
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        activated = self.activation(self.norm()(x))
        y = self.conv(self.features, 3, self.strides)(activated)
        y = self.activation(self.norm()(y))
        y = nn.Dropout(self.dropout_rate, deterministic=not self.train)(y)
        y = self.conv(self.features, 3)(y)
        if x.shape != y.shape:
            # As in the WRN paper's code: the projection sees the activated input.
            return y + self.conv(self.features, 1, self.strides, name="projection")(activated)
        return y + x


class ConvBlock(nn.Module):
    """VGG's unit: 3x3 convolution, norm, ReLU."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x):
        return self.activation(self.norm()(self.conv(self.features, 3)(x)))


BLOCK_TYPES = (BasicBlock, BottleneckBlock, PreActBlock, ConvBlock)


class ResNet(_Classifier):
    """ResNet v1 for ImageNet (He et al. 2016) with the strided 3x3 convolution of v1.5.

    Stem: 7x7/2 convolution with 64 channels, norm, ReLU, 3x3/2 max pool; then
    four stages of ``stage_sizes`` blocks with 64, 128, 256, 512 base channels.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: type[nn.Module] = BasicBlock

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        _validate_stages(self.sbn_stages, len(self.stage_sizes), type(self).__name__)
        x = jnp.asarray(x, self.dtype)
        x = self.conv(64, 7, 2, name="stem")(x)
        x = self.activation(self.norm_for(0, train)(name="stem_norm")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, size in enumerate(self.stage_sizes):
            for i in range(size):
                x = self.block(
                    features=64 * 2**stage,
                    strides=2 if stage > 0 and i == 0 else 1,
                    conv=self.conv,
                    norm=self.norm_for(stage, train),
                    zero_init=self.zero_init_residual,
                    activation=self.activation,
                )(x)
        return self.head(x)


class CifarResNet(_Classifier):
    """ResNet for 32x32 images (He et al. 2016, §4.2): depth ``6 n + 2``.

    A 3x3 convolution with 16 channels, then three stages of ``n`` basic
    blocks with 16, 32, 64 channels (the first block of stages 1 and 2
    subsamples by 2), parameter-free zero-padding shortcuts.
    """

    depth: int = 20

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CifarResNet depth must be 6n + 2 with n >= 1, got {self.depth}")
        _validate_stages(self.sbn_stages, 3, type(self).__name__)
        x = jnp.asarray(x, self.dtype)
        x = self.conv(16, 3, name="stem")(x)
        x = self.activation(self.norm_for(0, train)(name="stem_norm")(x))
        for stage in range(3):
            for i in range((self.depth - 2) // 6):
                x = BasicBlock(
                    features=16 * 2**stage,
                    strides=2 if stage > 0 and i == 0 else 1,
                    conv=self.conv,
                    norm=self.norm_for(stage, train),
                    zero_init=self.zero_init_residual,
                    shortcut="pad",
                    activation=self.activation,
                )(x)
        return self.head(x)


class WideResNet(_Classifier):
    """WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016), pre-activation blocks.

    A 3x3 convolution with 16 channels, three stages of ``(depth - 4) / 6``
    blocks with ``16, 32, 64`` times ``width`` channels, a final norm and ReLU.
    ``zero_init_residual`` does not apply (pre-activation blocks end with a
    convolution).
    """

    depth: int = 28
    width: int = 10
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {self.depth}")
        _validate_stages(self.sbn_stages, 3, type(self).__name__)
        x = jnp.asarray(x, self.dtype)
        x = self.conv(16, 3, name="stem")(x)
        for stage in range(3):
            for i in range((self.depth - 4) // 6):
                x = PreActBlock(
                    features=16 * self.width * 2**stage,
                    strides=2 if stage > 0 and i == 0 else 1,
                    conv=self.conv,
                    norm=self.norm_for(stage, train),
                    dropout_rate=self.dropout_rate,
                    train=train,
                    activation=self.activation,
                )(x)
        x = self.activation(self.norm_for(2, train)(name="final_norm")(x))
        return self.head(x)


VGG_LAYOUTS = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


class VGG(_Classifier):
    """VGG for 32x32 images (Simonyan & Zisserman 2015, configurations A and D).

    Five stages of 3x3 convolutions, each followed by a 2x2 max pool, then a
    dense layer on the 512 channels. No residual connections, so feature maps
    compound through depth. Pools use "SAME" padding so that small inputs
    (e.g. 8x8 digits) stay valid.
    """

    depth: int = 16

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        if self.depth not in VGG_LAYOUTS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_LAYOUTS)}, got {self.depth}")
        layout = VGG_LAYOUTS[self.depth]
        _validate_stages(self.sbn_stages, len(layout), type(self).__name__)
        x = jnp.asarray(x, self.dtype)
        for stage, widths in enumerate(layout):
            for features in widths:
                x = ConvBlock(
                    features,
                    conv=self.conv,
                    norm=self.norm_for(stage, train),
                    activation=self.activation,
                )(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return self.head(x)


MODELS: dict[str, Callable[..., _Classifier]] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock),
    "resnet101": functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=BottleneckBlock),
    "resnet152": functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=BottleneckBlock),
    **{
        f"cifar_resnet{depth}": functools.partial(CifarResNet, depth=depth)
        for depth in (20, 32, 44, 56, 110)
    },
    "wrn28_10": functools.partial(WideResNet, depth=28, width=10),
    "vgg11": functools.partial(VGG, depth=11),
    "vgg16": functools.partial(VGG, depth=16),
}


def create_model(
    name: str,
    *,
    num_classes: int,
    norm: str = "bn",
    sbn_stages: Sequence[int] | None = None,
    sbn_options: Mapping[str, Any] | None = None,
    zero_init_residual: bool = False,
    activation: str = "relu",
    dtype: Dtype = jnp.float32,
    axis_name: str | None = None,
    **kwargs: Any,
) -> _Classifier:
    """The model registered as ``name`` in :data:`MODELS`; see the module docstring.

    Raises:
      ValueError: unknown ``name``, ``norm`` or ``activation`` (a name in
        :data:`ACTIVATIONS`), ``num_classes < 1``, or SBN options that
        :class:`sbn_jax.SpectralBatchNorm` does not take.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    sbn_options = dict(sbn_options or {})
    allowed = {
        "per_frequency",
        "fft_norm",
        "impl",
        "spatial_axes",
        "use_bias",
        "use_scale",
        "redundant_affine",
    }
    unknown = sorted(set(sbn_options) - allowed)
    if unknown:
        raise ValueError(f"sbn_options may set {sorted(allowed)}, got unknown keys {unknown}")
    return MODELS[name](
        num_classes=num_classes,
        norm=norm,
        sbn_stages=None if sbn_stages is None else tuple(sbn_stages),
        sbn_options=FrozenDict(sbn_options),
        zero_init_residual=zero_init_residual,
        activation=ACTIVATIONS[activation],
        dtype=dtype,
        axis_name=axis_name,
        **kwargs,
    )
