"""How often the loop logs, evaluates and checkpoints: the config's cadences as step counts.

Evaluation and checkpoints can be given in steps (``eval_every_steps``,
``checkpoint_every_steps``) or in epochs (``eval_every_epochs``,
``checkpoint_every_epochs``), which :func:`steps` turns into steps with the loop's own
steps per epoch, so that a recipe's "every 5 epochs" stays five epochs under
``--config.batch_size``. A cadence is given by one key of its pair, not both; with
neither, evaluation runs at the end only and checkpoints every
:data:`train.configs.default.CHECKPOINT_EVERY_STEPS` steps (and at the end).
"""

from __future__ import annotations

from typing import NamedTuple

from train.configs import default

# Each cadence: (its key in steps, its key in epochs).
PAIRS = {
    "eval": ("eval_every_steps", "eval_every_epochs"),
    "checkpoint": ("checkpoint_every_steps", "checkpoint_every_epochs"),
}


class Cadences(NamedTuple):
    """Steps between logs, evaluations (0: at the end only) and checkpoints."""

    log: int
    eval: int
    checkpoint: int


def check(config) -> None:
    """Raises ValueError on cadences that cannot run, reading no data: a cadence given both in
    steps and in epochs, a negative number of epochs, or a step count that is not positive
    (``eval_every_steps`` may be 0: at the end only)."""
    for name, (steps_key, epochs_key) in PAIRS.items():
        steps, epochs = config[steps_key], config[epochs_key]
        if epochs < 0:
            raise ValueError(f"{epochs_key} must be >= 0 (0: off), got {epochs}")
        if epochs > 0 and steps:
            off = "None" if name == "checkpoint" else "0"
            raise ValueError(
                f"{steps_key}={steps} and {epochs_key}={epochs} both set the {name} cadence: "
                f"set only one ({steps_key}={off} or {epochs_key}=0 turns that one off)"
            )
    if config.eval_every_steps < 0:
        raise ValueError(f"eval_every_steps must be >= 0 (0: off), got {config.eval_every_steps}")
    for key in ("log_every_steps", "checkpoint_every_steps"):
        if config[key] is not None and config[key] <= 0:
            raise ValueError(f"{key} must be positive, got {config[key]}")
    if config.validation_fraction and not (config.eval_every_steps or config.eval_every_epochs):
        raise ValueError(
            "validation_fraction > 0 needs eval_every_steps or eval_every_epochs > 0 to select "
            "a step"
        )


def _in_steps(epochs: float, steps_per_epoch: int) -> int:
    return max(1, round(epochs * steps_per_epoch)) if epochs > 0 else 0


def steps(config, steps_per_epoch: int) -> Cadences:
    """The cadences of ``config``, checked beforehand by :func:`check`, in steps: epochs count
    ``steps_per_epoch`` steps (the loop's, :func:`train.input_pipeline.steps_per_epoch`),
    rounded to the nearest step, at least 1."""
    evaluate = config.eval_every_steps or _in_steps(config.eval_every_epochs, steps_per_epoch)
    checkpoint = config.checkpoint_every_steps or _in_steps(
        config.checkpoint_every_epochs, steps_per_epoch
    )
    return Cadences(config.log_every_steps, evaluate, checkpoint or default.CHECKPOINT_EVERY_STEPS)
