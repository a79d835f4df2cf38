"""Training recipes for sbn_jax models.

python -m train --workdir DIR --config train/configs/NAME.py [--config.KEY=VALUE]
"""
