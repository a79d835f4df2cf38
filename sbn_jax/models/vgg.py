"""VGG with a norm after every convolution, for 32x32 images (and smaller), as the paper's."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sbn_jax.models.classifier import ModuleDef, _Classifier, check_width


class ConvBlock(nn.Module):
    """VGG's unit: 3x3 convolution, norm, ReLU."""

    features: int
    conv: ModuleDef
    norm: ModuleDef
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(self.norm()(self.conv(self.features, 3)(x)))


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
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
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
        return self.logits(x)
