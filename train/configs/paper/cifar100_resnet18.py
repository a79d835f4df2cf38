"""Table II: cifar_resnet18 on cifar100.

The paper's top-1 accuracy (mean ± std): bn 76.47 ± 0.20, 2bn34 76.41 ± 0.15, sbn34 77.11 ± 0.30.

python -m train --workdir DIR --config train/configs/paper/cifar100_resnet18.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "76.47 ± 0.20", "2bn34": "76.41 ± 0.15", "sbn34": "77.11 ± 0.30"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar100", model="cifar_resnet18", variant=variant, rows=ROWS, table="Table II"
    )
