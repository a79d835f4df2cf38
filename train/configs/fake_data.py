"""Throughput of ResNet-50 with BN + SBN on synthetic ImageNet-shaped data (no tfds, no disk).

    python -m train --workdir /tmp/fake --config train/configs/fake_data.py \
        --config.batch_size=256 --config.norm=bn
"""

from train.configs import imagenet_resnet50


def get_config():
    config = imagenet_resnet50.get_config()
    config.dataset = "fake"
    config.num_classes = 1000
    config.num_train_steps = 200
    config.fake_eval_steps = 2
    config.log_every_steps = 20
    config.eval_every_steps, config.eval_every_epochs = 0, 0.0  # At the end only.
    config.checkpoint_every_epochs = 0.0
    config.checkpoint_every_steps = 10**9  # Only the final checkpoint.
    return config
