"""Table II: cifar_resnet50 on cifar100.

The paper's top-1 accuracy (mean ± std): bn 76.17 ± 0.69, 2bn34 76.53 ± 1.03, sbn34 78.49 ± 0.24.

python -m train --workdir DIR --config train/configs/paper/cifar100_resnet50.py:VARIANT
with VARIANT one of bn, 2bn34, sbn34 (default: the last, the paper's SBN row).
"""

from train.configs.paper import common

ROWS = {"bn": "76.17 ± 0.69", "2bn34": "76.53 ± 1.03", "sbn34": "78.49 ± 0.24"}


def get_config(variant=None):
    return common.paper_config(
        dataset="cifar100", model="cifar_resnet50", variant=variant, rows=ROWS, table="Table II"
    )
