"""CIFAR-100, WideResNet-28-10 with BN + SBN (Zagoruyko & Komodakis 2016: 200 epochs, wd 5e-4)."""

from train.configs import default


def get_config():
    config = default.get_config()
    config.dataset = "cifar100"
    config.crop_padding = 4
    config.random_flip = True
    config.model = "wrn28_10"
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_epochs = 200.0
    config.warmup_epochs = 1.0
    config.learning_rate = 0.2  # 0.1 at batch 128.
    config.weight_decay = 5e-4
    config.half_precision = True
    config.log_every_steps = 100
    config.eval_every_epochs = 5.0  # 1950 steps at batch 128.
    config.checkpoint_every_epochs = 5.0
    return config
