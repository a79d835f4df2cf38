"""Table I: cifar_resnet34 on cifar10.

The paper's top-1 accuracy (mean ± std): bn 93.69 ± 0.30, 2bn34 94.01 ± 0.22, sbn34 94.67 ± 0.18.

python -m train --workdir DIR --config train/configs/paper/cifar10_resnet34.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "93.69 ± 0.30", "2bn34": "94.01 ± 0.22", "sbn34": "94.67 ± 0.18"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar10", model="cifar_resnet34", variant=variant, rows=ROWS, table="Table I"
    )
