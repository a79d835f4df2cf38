"""Where the train state and the batches live: pmap replicas or one mesh under jit.

Both placements name their one device axis :data:`DEVICE_AXIS` and compute the
same function as one device with the whole batch:

* :class:`PmapPlacement` replicates the state over the local devices and splits
  the batch among them; the models average their batch statistics over the
  axis (``axis_name``) and the steps average gradients and metrics over it.
* :class:`MeshPlacement` keeps one state replicated over a
  :class:`jax.sharding.Mesh` and shards the global batch along its axis; the
  models compute plain means over the global batch and XLA inserts the
  collectives, so no axis name is needed.

Checkpoints hold the state as arrays replicated over the mesh (``to_global``),
so a run may resume under either placement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DEVICE_AXIS = "devices"


class Placement:
    """Compiles the steps and moves state and batches; subclasses say how.

    Attributes:
      devices: every device of the run, all processes.
      mesh: a one-axis mesh over ``devices`` (the checkpoint format's).
      replicated: the sharding of arrays replicated over the mesh.
      sharded: the sharding of arrays split along the mesh's axis.
      local_devices: this process's devices.
    """

    parallelism: str = ""

    def __init__(self, devices: Sequence[jax.Device]):
        self.devices = list(devices)
        self.mesh = Mesh(np.asarray(self.devices), (DEVICE_AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(DEVICE_AXIS))
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]

    @property
    def axis_name(self) -> str | None:
        """The axis the models average statistics over, or None when XLA does it."""
        return None

    def compile(self, step: Callable, *, donate: bool) -> Callable:
        """``step(state, batch, axis_name=...)`` compiled for this placement."""
        raise NotImplementedError

    def put_state(self, state: Any) -> Any:
        """Host state -> device state."""
        raise NotImplementedError

    def put_batch(self, batch: Any) -> Any:
        """This process's rows of the global batch -> the step's input."""
        raise NotImplementedError

    def first(self, tree: Any) -> Any:
        """One replica's values, as host arrays."""
        raise NotImplementedError

    def gather_rows(self, tree: Any) -> Any:
        """Per-example outputs of a step -> host arrays ``(B, ...)`` of the global batch.

        Rows come in the global batch's order (process ``p`` holds its slice ``p``,
        see :class:`train.input_pipeline.Sharding`). Every process must call it
        (with several processes it is a collective) and gets the whole batch.
        """
        # Global arrays (sharded or replicated over the mesh): tiled, this assembles the whole
        # array on every process; in one process it is a copy to the host.
        return multihost_utils.process_allgather(tree, tiled=True)

    def to_global(self, state: Any) -> Any:
        """Device state -> arrays replicated over the mesh (the checkpoint format)."""
        return state

    def from_global(self, state: Any) -> Any:
        """Checkpoint format -> device state."""
        return state

    def prepare_eval(self, state: Any) -> Any:
        """The state to evaluate (and checkpoint) with."""
        return state


class PmapPlacement(Placement):
    """A state replica and a slice of the batch per local device (``jax.pmap``)."""

    parallelism = "pmap"

    @property
    def axis_name(self) -> str:
        return DEVICE_AXIS

    def compile(self, step: Callable, *, donate: bool) -> Callable:
        devices = None if len(self.devices) == jax.device_count() else self.devices
        return jax.pmap(
            functools.partial(step, axis_name=DEVICE_AXIS),
            axis_name=DEVICE_AXIS,
            devices=devices,
            donate_argnums=(0,) if donate else (),
        )

    def put_state(self, state: Any) -> Any:
        # One replica per local device, stacked on the host and placed with the sharding that
        # pmap gives its outputs (a mesh over the same devices, named after its axis): a state
        # placed any other way (flax's `replicate` names its own axis) makes the second step
        # miss the compilation cache and compile the whole step again.
        sharding = NamedSharding(
            Mesh(np.asarray(self.local_devices), (DEVICE_AXIS,)), P(DEVICE_AXIS)
        )
        count = len(self.local_devices)
        return jax.tree.map(
            lambda x: jax.device_put(np.stack([np.asarray(x)] * count), sharding), state
        )

    def put_batch(self, batch: Any) -> Any:
        count = len(self.local_devices)
        return jax.tree.map(lambda x: x.reshape(count, -1, *x.shape[1:]), batch)

    def first(self, tree: Any) -> Any:
        return jax.device_get(jax.tree.map(lambda x: x.addressable_data(0)[0], tree))

    def gather_rows(self, tree: Any) -> Any:
        # (local devices, rows, ...): device d holds slice d of this process's rows (put_batch),
        # so flattening the two axes gives them in order; the processes' parts then concatenate.
        local = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), tree)
        return super().gather_rows(local)

    def to_global(self, state: Any) -> Any:
        def merge(x: jax.Array) -> jax.Array:
            replicas = [shard.data.reshape(x.shape[1:]) for shard in x.addressable_shards]
            return jax.make_array_from_single_device_arrays(x.shape[1:], self.replicated, replicas)

        return jax.tree.map(merge, state)

    def from_global(self, state: Any) -> Any:
        return self.put_state(jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state))

    def prepare_eval(self, state: Any) -> Any:
        """Averages the replicas' batch statistics.

        With ``axis_name`` set in the models they already agree; this removes
        any floating-point drift before evaluation and checkpoints.
        """
        if not jax.tree.leaves(state.batch_stats):
            return state
        return state.replace(batch_stats=_cross_replica_mean(state.batch_stats))


@functools.partial(jax.pmap, axis_name=DEVICE_AXIS)
def _cross_replica_mean(tree: Any) -> Any:
    return jax.lax.pmean(tree, DEVICE_AXIS)


class MeshPlacement(Placement):
    """One state replicated over a mesh and the global batch sharded along it (``jax.jit``)."""

    parallelism = "jit"

    def compile(self, step: Callable, *, donate: bool) -> Callable:
        return jax.jit(
            functools.partial(step, axis_name=None),
            in_shardings=(self.replicated, self.sharded),
            out_shardings=self.replicated,
            donate_argnums=(0,) if donate else (),
        )

    def put_state(self, state: Any) -> Any:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)), state
        )

    def put_batch(self, batch: Any) -> Any:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.sharded, x), batch
        )

    def first(self, tree: Any) -> Any:
        return jax.device_get(jax.tree.map(lambda x: x.addressable_data(0), tree))


PLACEMENTS: dict[str, type[Placement]] = {"pmap": PmapPlacement, "jit": MeshPlacement}


def make_placement(config: ml_collections.ConfigDict) -> Placement:
    """The placement of ``config.parallelism`` over ``config.num_devices`` (-1: all)."""
    devices = jax.devices()
    if config.num_devices > 0:
        devices = devices[: config.num_devices]
    return PLACEMENTS[config.parallelism](devices)
