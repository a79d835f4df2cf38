"""The paper's CIFAR ResNet-18 and CIFAR protocol, on Fashion-MNIST (issue 22's study).

    python -m train --workdir DIR --config train/configs/fashion_mnist_resnet18.py:VARIANT
    python -m train --workdir DIR --config train/configs/fashion_mnist_resnet18.py:VARIANT,N
    python -m train --workdir DIR --config train/configs/fashion_mnist_resnet18.py:VARIANT,N,E

VARIANT is one of :data:`VARIANTS` (default ``sbn34``): the paper's ``bn``, ``sbn34`` and
``2bn34``, and the controls ``rescale34`` (BatchNorm then SBN's fixed 1/sqrt(H W) rescale
with a learned scale), ``shrunk_init34`` (plain BatchNorm whose scales in modules 3-4 start
at 1/sqrt(H W)) and ``temperature`` (plain BatchNorm, logits times SBN34's ratio at
initialization, 1/4); see train/configs/variants.py. ``,N`` trains on ``N`` images
of each class (``train_examples_per_class``, drawn by the seed from the 90% of the
training split that is not held out; the same images for every variant of a seed), and
the validation and checkpoint cadence stays once per epoch of that subset. ``,E`` trains
for ``E`` epochs instead of 200, the decays at the same fractions of training (epochs
``round(0.45 E)`` and ``round(0.68 E)``, 90 and 136 of 200).

From the paper's CIFAR-10 ResNet recipe (:func:`train.configs.paper.common.cifar_protocol`):
SGD with momentum 0.9 at 0.1, x0.1 at epochs 90 and 136 of 200, weight decay 1e-4 on
every parameter, batch 128, pad-4 crops and flips, the last 10% of the training split
held out and the best validation epoch scored on the test split. Adapted: the 28x28
grey images are zero-padded to 32x32 (``pad_to``, not resized), so that the stages run
at 32/16/8/4 as on CIFAR. ``--config.base_width=16`` narrows the model for a CPU.
Data: ``make fashion-mnist`` (the files of Debian's ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import ml_collections

from train.configs import default
from train.configs.paper import common
from train.configs.variants import VARIANTS as NORM_VARIANTS

# This recipe's variant: the study's name for it in train/configs/variants.py.
VARIANTS = {
    "bn": "bn",
    "sbn34": "bn+sbn34",
    "2bn34": "2bn34",
    "rescale34": "bn+rescale34",
    "shrunk_init34": "bn:shrunk_init34",
    "temperature": "bn:temperature",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The recipe of ``arg`` = ``"VARIANT"``, ``"VARIANT,N"`` (N images per class) or
    ``"VARIANT,N,E"`` (and E epochs; N may be empty: ``"bn,,30"``).

    Raises:
      ValueError: an unknown variant, or an N or E that is no positive integer.
    """
    variant, *numbers = (arg or "sbn34").split(",")
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_resnet18 variants are {sorted(VARIANTS)}; got {variant!r}")
    if len(numbers) > 2:
        raise ValueError(f"expected VARIANT[,N[,E]], got {arg!r}")
    per_class, epochs = [*numbers, "", ""][:2]
    for name, value in (("images per class N", per_class), ("epochs E", epochs)):
        if value and not (value.isdigit() and int(value) > 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    norm, sbn_options, model_options = NORM_VARIANTS[VARIANTS[variant]]
    config = default.get_config()
    config.dataset, config.model, config.norm = "fashion_mnist", "cifar_resnet18", norm
    config.base_width = 64  # The paper's ResNet-18; 16 for CPU proxies.
    common.paper_optimization(config)
    config.sbn_options.update(sbn_options)
    config.update(model_options)
    config.pad_to = 32
    config.train_examples_per_class = int(per_class) if per_class else None
    common.cifar_protocol(config, resnet_schedule=True)
    if epochs:
        config.num_epochs = float(epochs)
        fractions = [b / 200 for b in config.lr_boundaries_epochs]
        config.lr_boundaries_epochs = tuple(round(f * int(epochs)) for f in fractions)
    return config
