"""Residual networks: ImageNet ResNets, the CIFAR ResNets of He et al. and the paper, WRNs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbn_jax.models.classifier import ModuleDef, _Classifier, check_width


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
    def __call__(self, x: jax.Array) -> jax.Array:
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
    def __call__(self, x: jax.Array) -> jax.Array:
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
    def __call__(self, x: jax.Array) -> jax.Array:
        activated = self.activation(self.norm()(x))
        y = self.conv(self.features, 3, self.strides)(activated)
        y = self.activation(self.norm()(y))
        y = nn.Dropout(self.dropout_rate, deterministic=not self.train)(y)
        y = self.conv(self.features, 3)(y)
        if x.shape != y.shape:
            # As in the WRN paper's code: the projection sees the activated input.
            return y + self.conv(self.features, 1, self.strides, name="projection")(activated)
        return y + x


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
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
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
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
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
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
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
