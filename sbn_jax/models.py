"""Image classifiers with a normalization switch: ResNets, CIFAR ResNets, WideResNets, VGG.

Every model is a ``flax.linen`` module called as ``model.apply(variables, x,
train=bool, mutable=["batch_stats"])`` on NHWC images ``(B, H, W, 3)`` and
returns float32 logits ``(B, num_classes)``. The ``norm`` field picks what
follows each convolution:

* ``"none"``: nothing (the convolutions get biases instead);
* ``"bn"``: ``flax.linen.BatchNorm``;
* ``"sbn"``: :class:`sbn_jax.SpectralBatchNorm` in place of BatchNorm;
* ``"bn+sbn"``: :class:`sbn_jax.SpatialSpectralBatchNorm`, BatchNorm then SBN,
  the paper's layer;
* ``"2bn"``: a BatchNorm then a second BatchNorm, the paper's control;
* the paper's notation ``"sbn<modules>"`` / ``"2bn<modules>"``, e.g.
  ``"sbn34"``: ``"bn+sbn"`` for every norm layer of modules 3 and 4 (shortcut
  norms included) and plain BatchNorm elsewhere, stem included; ``"2bn4"``:
  the 2BN control in module 4.

Modules are the paper's: the residual stages numbered from 1 (the stem is in
none), VGG's five pooling stages. ``modules=(3, 4)`` with a plain kind says the
same as the notation. ``sbn_options`` go to every SBN layer (e.g.
``per_frequency``, ``fft_norm``, ``impl``; ``redundant_affine`` to every BN+SBN
and 2BN pair). Norm layers use momentum 0.9 and epsilon 1e-5, the PyTorch
defaults the published results were trained with. With ``axis_name`` the batch
statistics are averaged over that pmap/shard_map axis. ``dtype`` is the
computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
``activation`` (``"relu"``, the published models' choice, ``"gelu"`` or
``"silu"``) follows every norm and every residual sum.

Parameter counts equal the published ones (with ``norm="bn"``): ResNet-18
11,689,512, ResNet-50 25,557,032 (1000 classes), CIFAR ResNet-18/34/50
11,173,962 / 21,282,122 / 23,520,842 and ResNet-20 0.27M, ResNet-110 1.7M,
WRN-28-10 36.5M, VGG16-BN / VGG19-BN 15,249,354 / 20,560,330 (10 classes; the
published 15,253,578 / 20,565,834 count convolution biases, which a following
BatchNorm makes redundant and which these models leave out). SBN has the same
two vectors per layer as BatchNorm; in ``bn+sbn`` the BatchNorm keeps only its
bias (SBN makes its scale redundant, see
:class:`sbn_jax.SpatialSpectralBatchNorm`), so ``bn+sbn`` adds one vector per
norm layer to ``bn`` (none with per-frequency statistics, where the BatchNorm
keeps no parameter); ``2bn``'s first BatchNorm keeps none either.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from sbn_jax.linen import SpatialSpectralBatchNorm, SpectralBatchNorm

NORMS = ("none", "bn", "sbn", "bn+sbn", "2bn")
# The paper's names: "sbn34" = SBN after every BatchNorm of modules 3 and 4, "2bn4" = a second
# BatchNorm after every BatchNorm of module 4.
PAPER_NOTATION = re.compile(r"(sbn|2bn)([1-9]+)")
PAPER_KINDS = {"sbn": "bn+sbn", "2bn": "2bn"}
# ReLU is what the published models use. The smooth ones have no kink, so their gradients are
# continuous in the parameters; see README, "Reproducibility across device counts".
ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu}
NORM_MOMENTUM = 0.9
NORM_EPSILON = 1e-5

Dtype = Any
Initializer = Callable[..., Any]
ModuleDef = Callable[..., nn.Module]

# Weight initializations, as PyTorch code does them.
# "torchvision": convolutions He-normal over fan-out (torchvision's ResNets; also the CIFAR VGG
# code's normal(0, sqrt(2 / (k * k * out_channels)))), dense layers Flax's LeCun normal.
# "pytorch": PyTorch's default for Conv2d and Linear, Kaiming-uniform with a = sqrt(5), i.e.
# uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): what the paper's CIFAR ResNets used.
# "vgg": the paper's CIFAR VGGs, convolutions as "torchvision", dense layers as "pytorch".
# Biases start at zero throughout (PyTorch draws Linear biases uniformly; a documented choice).
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
PYTORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
INITS = {
    "torchvision": (HE_NORMAL_FAN_OUT, nn.initializers.lecun_normal()),
    "pytorch": (PYTORCH_DEFAULT, PYTORCH_DEFAULT),
    "vgg": (HE_NORMAL_FAN_OUT, PYTORCH_DEFAULT),
}


def resolve_placement(
    norm: str, modules: Sequence[int] | None, num_modules: int, model: str
) -> tuple[str, tuple[int, ...] | None]:
    """The layer kind of ``norm`` and the modules it applies to (``None``: every norm layer).

    Accepts a kind from :data:`NORMS` with an optional ``modules`` restriction, or the
    paper's notation: ``"sbn34"`` is ``("bn+sbn", (3, 4))``, ``"2bn4"`` is
    ``("2bn", (4,))``. Modules are numbered from 1 and the stem belongs to none.

    Raises:
      ValueError: an unknown kind or notation, a module outside ``1..num_modules``,
        or a notation combined with ``modules``.
    """
    match = PAPER_NOTATION.fullmatch(norm)
    if match:
        if modules is not None:
            raise ValueError(f"norm={norm!r} names its modules already; do not also pass modules")
        kind, modules = PAPER_KINDS[match[1]], tuple(int(d) for d in match[2])
    elif norm in NORMS:
        kind = norm
    else:
        raise ValueError(
            f"norm must be one of {NORMS} or the paper's notation 'sbn<modules>' / "
            f"'2bn<modules>' with modules in 1..{num_modules} (e.g. 'sbn34'), got {norm!r}"
        )
    if modules is None:
        return kind, None
    modules = tuple(modules)
    bad = [m for m in modules if not isinstance(m, int) or not 1 <= m <= num_modules]
    if bad or not modules or len(set(modules)) != len(modules):
        raise ValueError(
            f"{model} has modules 1..{num_modules}; got modules {modules} (from norm={norm!r})"
        )
    return kind, tuple(sorted(modules))


def layer_kind(kind: str, modules: tuple[int, ...] | None, module: int | None) -> str:
    """The norm of a layer in ``module`` (``None``: the stem or head): ``kind``, or ``"bn"``
    outside the chosen modules."""
    if kind in ("none", "bn") or modules is None or module in modules:
        return kind
    return "bn"


class Norm(nn.Module):
    """The normalization layer that ``kind`` names, or the identity for ``"none"``.

    ``zero_init`` starts the last scale at zero, which makes a residual branch
    start as zero (with ``"bn+sbn"`` SBN's, with ``"2bn"`` the second
    BatchNorm's). ``"2bn"`` is the paper's control: a BatchNorm directly after
    a BatchNorm; like the BatchNorm before SBN, the first one keeps no affine
    parameters unless ``sbn_options["redundant_affine"]``.
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
        if self.kind == "2bn":
            # The second BatchNorm ignores any per-channel affine map of its input, so the first
            # one's scale and bias are redundant, exactly as a BatchNorm's before SBN.
            keep = bool(options.get("redundant_affine", False))
            x = nn.BatchNorm(use_scale=keep, use_bias=keep, **common, name="BatchNorm")(x)
            return nn.BatchNorm(scale_init=scale_init, **common, name="SecondBatchNorm")(x)
        raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")


def conv(
    features: int,
    kernel: int,
    strides: int = 1,
    name: str | None = None,
    *,
    use_bias: bool,
    dtype: Dtype,
    kernel_init: Initializer,
) -> nn.Conv:
    """A ``kernel x kernel`` convolution with PyTorch's symmetric padding."""
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=((pad, pad), (pad, pad)),
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=kernel_init,
        name=name,
    )


class _Classifier(nn.Module):
    """Fields and norm plumbing shared by every model.

    Subclasses set ``num_modules``: the stages the paper's notation numbers
    from 1 (residual stages; VGG's pooling stages).
    """

    num_classes: int
    norm: str = "bn"
    modules: Sequence[int] | None = None
    sbn_options: Mapping[str, Any] | None = None
    zero_init_residual: bool = False
    activation: Callable = nn.relu
    weight_init: str = "torchvision"
    dtype: Dtype = jnp.float32
    axis_name: str | None = None

    @property
    def num_modules(self) -> int:
        raise NotImplementedError

    def placement(self) -> tuple[str, tuple[int, ...] | None]:
        """``(kind, modules)`` of :func:`resolve_placement`; raises on a bad ``norm``."""
        return resolve_placement(self.norm, self.modules, self.num_modules, type(self).__name__)

    def norm_for(self, module: int | None, train: bool) -> ModuleDef:
        """A ``Norm`` constructor for a layer of ``module`` (1-based; ``None`` for the stem)."""
        kind, modules = self.placement()
        return functools.partial(
            Norm,
            kind=layer_kind(kind, modules, module),
            train=train,
            dtype=self.dtype,
            axis_name=self.axis_name,
            sbn_options=self.sbn_options,
        )

    @property
    def conv(self) -> ModuleDef:
        """A convolution constructor ``(features, kernel, strides=1, name=None)``."""
        if self.weight_init not in INITS:
            raise ValueError(
                f"weight_init must be one of {sorted(INITS)}, got {self.weight_init!r}"
            )
        return functools.partial(
            conv,
            use_bias=self.placement()[0] == "none",
            dtype=self.dtype,
            kernel_init=INITS[self.weight_init][0],
        )

    def dense(self, features: int, name: str | None = None) -> nn.Dense:
        """A dense layer with the model's ``weight_init``."""
        kernel_init = INITS[self.weight_init][1]
        return nn.Dense(features, dtype=self.dtype, kernel_init=kernel_init, name=name)

    def head(self, x):
        """Global average pool and dense layer: ``(B, H, W, C) -> (B, num_classes)``, float32."""
        x = jnp.mean(x, axis=(1, 2))
        return jnp.asarray(self.dense(self.num_classes, name="head")(x), jnp.float32)

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


def check_width(base_width: int) -> None:
    """Refuses a channel count that is not a positive integer."""
    if not isinstance(base_width, int) or base_width < 1:
        raise ValueError(
            f"base_width must be a positive integer (64: the published models), got {base_width!r}"
        )


class ResNet(_Classifier):
    """ResNet v1 (He et al. 2016) with the strided 3x3 convolution of v1.5.

    ``stem="imagenet"``: 7x7/2 convolution with 64 channels, norm, ReLU, 3x3/2
    max pool. ``stem="cifar"``: a 3x3/1 convolution with 64 channels, norm,
    ReLU and no pooling, the adaptation to 32x32 images the paper's CIFAR
    ResNet-18/34/50 use. Then four stages (the paper's modules 1-4) of
    ``stage_sizes`` blocks with 64, 128, 256, 512 base channels; a block whose
    shape changes has a 1x1 projection and a norm on its shortcut.
    ``base_width`` replaces the 64 of the stem and first stage (the stages still double it):
    narrow proxies for CPU experiments.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: type[nn.Module] = BasicBlock
    stem: str = "imagenet"
    base_width: int = 64

    @property
    def num_modules(self) -> int:
        return len(self.stage_sizes)

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        self.placement()
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        check_width(self.base_width)
        x = jnp.asarray(x, self.dtype)
        if self.stem == "imagenet":
            x = self.conv(self.base_width, 7, 2, name="stem")(x)
            x = self.activation(self.norm_for(None, train)(name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            x = self.conv(self.base_width, 3, name="stem")(x)
            x = self.activation(self.norm_for(None, train)(name="stem_norm")(x))
        for stage, size in enumerate(self.stage_sizes):
            for i in range(size):
                x = self.block(
                    features=self.base_width * 2**stage,
                    strides=2 if stage > 0 and i == 0 else 1,
                    conv=self.conv,
                    norm=self.norm_for(stage + 1, train),
                    zero_init=self.zero_init_residual,
                    activation=self.activation,
                )(x)
        return self.head(x)


class CifarResNet(_Classifier):
    """ResNet for 32x32 images (He et al. 2016, §4.2): depth ``6 n + 2``.

    A 3x3 convolution with 16 channels, then three stages (modules 1-3) of
    ``n`` basic blocks with 16, 32, 64 channels (the first block of stages 2
    and 3 subsamples by 2), parameter-free zero-padding shortcuts.
    """

    depth: int = 20

    @property
    def num_modules(self) -> int:
        return 3

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"CifarResNet depth must be 6n + 2 with n >= 1, got {self.depth}")
        self.placement()
        x = jnp.asarray(x, self.dtype)
        x = self.conv(16, 3, name="stem")(x)
        x = self.activation(self.norm_for(None, train)(name="stem_norm")(x))
        for stage in range(3):
            for i in range((self.depth - 2) // 6):
                x = BasicBlock(
                    features=16 * 2**stage,
                    strides=2 if stage > 0 and i == 0 else 1,
                    conv=self.conv,
                    norm=self.norm_for(stage + 1, train),
                    zero_init=self.zero_init_residual,
                    shortcut="pad",
                    activation=self.activation,
                )(x)
        return self.head(x)


class WideResNet(_Classifier):
    """WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016), pre-activation blocks.

    A 3x3 convolution with 16 channels, three stages (modules 1-3) of
    ``(depth - 4) / 6`` blocks with ``16, 32, 64`` times ``width`` channels, a
    final norm (module 3) and ReLU. ``zero_init_residual`` does not apply
    (pre-activation blocks end with a convolution).
    """

    depth: int = 28
    width: int = 10
    dropout_rate: float = 0.0

    @property
    def num_modules(self) -> int:
        return 3

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {self.depth}")
        self.placement()
        x = jnp.asarray(x, self.dtype)
        x = self.conv(16, 3, name="stem")(x)
        for stage in range(3):
            for i in range((self.depth - 4) // 6):
                x = PreActBlock(
                    features=16 * self.width * 2**stage,
                    strides=2 if stage > 0 and i == 0 else 1,
                    conv=self.conv,
                    norm=self.norm_for(stage + 1, train),
                    dropout_rate=self.dropout_rate,
                    train=train,
                    activation=self.activation,
                )(x)
        x = self.activation(self.norm_for(3, train)(name="final_norm")(x))
        return self.head(x)


VGG_LAYOUTS = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(_Classifier):
    """VGG for 32x32 images (Simonyan & Zisserman 2015, configurations A, D, E).

    Five stages (modules 1-5) of 3x3 convolutions, each followed by a 2x2 max
    pool, then the classifier on the 512 channels: ``classifier="linear"`` a
    dense layer; ``"mlp"`` the CIFAR VGG-BN classifier the paper trained
    (dropout, dense 512, ReLU, dropout, dense 512, ReLU, dense), with
    ``dropout_rate`` 0.5 there. No residual connections, so feature maps
    compound through depth. Pools use "SAME" padding so that small inputs
    (e.g. 8x8 digits) stay valid. ``base_width`` replaces the 64 channels of the
    first stage; every layer (and the MLP classifier's 512) scales with it.
    """

    depth: int = 16
    classifier: str = "linear"
    dropout_rate: float = 0.0
    base_width: int = 64

    @property
    def num_modules(self) -> int:
        return 5

    @nn.compact
    def __call__(self, x, train: bool):
        self.check_input(x)
        if self.depth not in VGG_LAYOUTS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_LAYOUTS)}, got {self.depth}")
        if self.classifier not in ("linear", "mlp"):
            raise ValueError(f"classifier must be 'linear' or 'mlp', got {self.classifier!r}")
        self.placement()
        check_width(self.base_width)
        x = jnp.asarray(x, self.dtype)
        for stage, widths in enumerate(VGG_LAYOUTS[self.depth]):
            for features in widths:
                x = ConvBlock(
                    features * self.base_width // 64,
                    conv=self.conv,
                    norm=self.norm_for(stage + 1, train),
                    activation=self.activation,
                )(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        if self.classifier == "linear":
            return self.head(x)
        x = jnp.mean(x, axis=(1, 2))  # 1x1 after five pools of a 32x32 input: a flatten.
        for i in range(2):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = self.activation(self.dense(8 * self.base_width, name=f"fc{i}")(x))
        return jnp.asarray(self.dense(self.num_classes, name="head")(x), jnp.float32)


MODELS: dict[str, Callable[..., _Classifier]] = {
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BottleneckBlock),
    "resnet101": functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=BottleneckBlock),
    "resnet152": functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=BottleneckBlock),
    # The paper's CIFAR ResNets: 3x3 stem, no max pool, PyTorch's default initialization.
    **{
        f"cifar_resnet{depth}": functools.partial(
            ResNet, stage_sizes=sizes, block=block, stem="cifar", weight_init="pytorch"
        )
        for depth, sizes, block in (
            (18, (2, 2, 2, 2), BasicBlock),
            (34, (3, 4, 6, 3), BasicBlock),
            (50, (3, 4, 6, 3), BottleneckBlock),
        )
    },
    **{
        f"cifar_resnet{depth}": functools.partial(CifarResNet, depth=depth)
        for depth in (20, 32, 44, 56, 110)
    },
    "wrn28_10": functools.partial(WideResNet, depth=28, width=10),
    "vgg11": functools.partial(VGG, depth=11),
    "vgg16": functools.partial(VGG, depth=16),
    # The paper's VGG16-BN / VGG19-BN for CIFAR: convolutions He-normal over fan-out (its
    # normal(0, sqrt(2 / (k * k * out_channels)))), dense layers PyTorch's default.
    **{
        f"vgg{depth}_bn": functools.partial(
            VGG, depth=depth, classifier="mlp", dropout_rate=0.5, weight_init="vgg"
        )
        for depth in (16, 19)
    },
}


def create_model(
    name: str,
    *,
    num_classes: int,
    norm: str = "bn",
    modules: Sequence[int] | None = None,
    sbn_options: Mapping[str, Any] | None = None,
    zero_init_residual: bool = False,
    activation: str = "relu",
    dtype: Dtype = jnp.float32,
    axis_name: str | None = None,
    **kwargs: Any,
) -> _Classifier:
    """The model registered as ``name`` in :data:`MODELS`; see the module docstring.

    Raises:
      ValueError: unknown ``name``, ``norm`` (a kind in :data:`NORMS` or the
        paper's notation such as ``"sbn34"``) or ``activation`` (a name in
        :data:`ACTIVATIONS`), modules the model does not have,
        ``num_classes < 1``, SBN options that
        :class:`sbn_jax.SpectralBatchNorm` does not take, or ``kwargs`` that
        are not fields of the model (e.g. ``base_width`` of ResNet and VGG).
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
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
        "use_mean",
        "divide_by",
        "separate_real_imag",
    }
    unknown = sorted(set(sbn_options) - allowed)
    if unknown:
        raise ValueError(f"sbn_options may set {sorted(allowed)}, got unknown keys {unknown}")
    fields = MODELS[name].func.__dataclass_fields__
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(
            f"{name} has no field(s) {unknown}; it takes {sorted(set(fields) - {'parent', 'name'})}"
        )
    model = MODELS[name](
        num_classes=num_classes,
        norm=norm,
        modules=None if modules is None else tuple(modules),
        sbn_options=FrozenDict(sbn_options),
        zero_init_residual=zero_init_residual,
        activation=ACTIVATIONS[activation],
        dtype=dtype,
        axis_name=axis_name,
        **kwargs,
    )
    try:
        model.placement()
    except ValueError as error:  # Name the registered model, not its class.
        raise ValueError(f"{name}: {error}") from None
    return model
