"""Command line: ``python -m train --workdir DIR --config train/configs/NAME.py [--config.KEY=V]``.

Multi-host: on TPU pod slices (and SLURM/Open MPI clusters) ``jax.distributed`` is
set up from the environment; elsewhere pass ``--coordinator_address host:port
--num_processes N --process_id I`` to each process.
"""

import contextlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events, summary.json.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "off"],
    "auto: initialize jax.distributed when flags or a known cluster (TPU pod, SLURM) ask for it.",
)
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["workdir", "config"])


def initialize_distributed() -> None:
    """Connects the processes of a multi-host run (explicit flags, or detected from the cluster)."""
    import jax

    if FLAGS.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    elif FLAGS.distributed == "auto":
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as error:  # No cluster found: one process.
            logging.info("single process (%s)", error)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Orbax and tfds log every step of their work at INFO.
        logging.set_verbosity(logging.WARNING)
    # TensorFlow only feeds data here; it must not take the accelerators.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    for kind in ("GPU", "TPU"):
        with contextlib.suppress(RuntimeError, ValueError):  # Unknown kind.
            tf.config.set_visible_devices([], kind)
    initialize_distributed()

    import jax

    from train import train

    logging.info(
        "JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(), jax.devices()
    )
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
