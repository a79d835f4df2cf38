"""Table I: cifar_resnet50 on cifar10.

The paper's top-1 accuracy (mean ± std): bn 93.31 ± 0.36, 2bn34 93.75 ± 0.19, sbn34 94.72 ± 0.18.

python -m train --workdir DIR --config train/configs/paper/cifar10_resnet50.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "93.31 ± 0.36", "2bn34": "93.75 ± 0.19", "sbn34": "94.72 ± 0.18"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar10", model="cifar_resnet50", variant=variant, rows=ROWS, table="Table I"
    )
