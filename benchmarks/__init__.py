"""Timing and memory of SBN against flax.linen.BatchNorm.

``python -m benchmarks`` times single layers; ``python -m benchmarks.resnet50``
times a whole ResNet-50 training step. See BENCHMARKS.md for the figures.
"""
