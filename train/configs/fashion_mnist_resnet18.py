"""The paper's CIFAR ResNet-18 and CIFAR protocol, on Fashion-MNIST (issue 22's study).

    python -m train --workdir DIR --config train/configs/fashion_mnist_resnet18.py:VARIANT
    python -m train --workdir DIR --config train/configs/fashion_mnist_resnet18.py:VARIANT,N

VARIANT is one of :data:`VARIANTS` (default ``sbn34``); ``,N`` trains on ``N`` images
of each class (``train_examples_per_class``, drawn by the seed from the 90% of the
training split that is not held out; the same images for every variant of a seed), and
the validation and checkpoint cadence stays once per epoch of that subset.

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
VARIANTS = {"bn": "bn", "sbn34": "bn+sbn34", "2bn34": "2bn34", "rescale34": "bn+rescale34"}
TRAIN_EXAMPLES = 54_000  # 9/10 of Fashion-MNIST's 60,000 training images.
NUM_CLASSES = 10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The recipe of ``arg`` = ``"VARIANT"`` or ``"VARIANT,N"`` (N images per class).

    Raises:
      ValueError: an unknown variant, or an N that is no positive integer.
    """
    variant, _, per_class = (arg or "sbn34").partition(",")
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_resnet18 variants are {sorted(VARIANTS)}; got {variant!r}")
    if per_class and not (per_class.isdigit() and int(per_class) > 0):
        raise ValueError(f"images per class must be a positive integer, got {per_class!r}")
    norm, sbn_options = NORM_VARIANTS[VARIANTS[variant]]
    config = default.get_config()
    config.dataset, config.model, config.norm = "fashion_mnist", "cifar_resnet18", norm
    config.base_width = 64  # The paper's ResNet-18; 16 for CPU proxies.
    common.paper_optimization(config)
    config.sbn_options.update(sbn_options)
    config.pad_to = 32
    config.train_examples_per_class = int(per_class) if per_class else None
    examples = NUM_CLASSES * int(per_class) if per_class else TRAIN_EXAMPLES
    common.cifar_protocol(config, examples, resnet_schedule=True)
    return config
