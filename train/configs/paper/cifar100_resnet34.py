"""Table II: cifar_resnet34 on cifar100.

The paper's top-1 accuracy (mean ± std): bn 77.07 ± 0.45, 2bn34 77.05 ± 0.25, sbn34 78.01 ± 0.45.

python -m train --workdir DIR --config train/configs/paper/cifar100_resnet34.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "77.07 ± 0.45", "2bn34": "77.05 ± 0.25", "sbn34": "78.01 ± 0.45"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar100", model="cifar_resnet34", variant=variant, rows=ROWS, table="Table II"
    )
