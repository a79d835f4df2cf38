"""Table I: vgg19_bn on cifar10.

The paper's top-1 accuracy (mean ± std): bn 93.21 ± 0.08, 2bn34 93.15 ± 0.15, sbn34 93.34 ± 0.10.

python -m train --workdir DIR --config train/configs/paper/cifar10_vgg19_bn.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "93.21 ± 0.08", "2bn34": "93.15 ± 0.15", "sbn34": "93.34 ± 0.10"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar10", model="vgg19_bn", variant=variant, rows=ROWS, table="Table I"
    )
