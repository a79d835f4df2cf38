"""Table I: cifar_resnet18 on cifar10.

The paper's top-1 accuracy (mean ± std): bn 94.04 ± 0.08, 2bn34 93.90 ± 0.26, sbn34 94.43 ± 0.11.

python -m train --workdir DIR --config train/configs/paper/cifar10_resnet18.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "94.04 ± 0.08", "2bn34": "93.90 ± 0.26", "sbn34": "94.43 ± 0.11"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar10", model="cifar_resnet18", variant=variant, rows=ROWS, table="Table I"
    )
