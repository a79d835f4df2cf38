"""CIFAR-10, ResNet-56 (He et al. 2016, §4.2) with BN + SBN: 182 epochs of SGD, batch 128."""

from train.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar10"
    config.crop_padding = 4
    config.random_flip = True
    config.model = "cifar_resnet56"
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_epochs = 182.0
    config.warmup_epochs = 1.0
    config.learning_rate = 0.2  # 0.1 at batch 128.
    config.weight_decay = 1e-4
    config.log_every_steps = 100
    config.eval_every_epochs = 5.0  # 1950 steps at batch 128 (390 steps per epoch).
    config.checkpoint_every_epochs = 5.0
    return config
