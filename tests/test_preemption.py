"""SIGTERM: the loop saves the step it is in, stops with exit status 75, and resumes exactly.

In-process, the run receives a real SIGTERM (sent to this process) while it fetches a batch, and
a second one during the write. As the command line (``python -m train`` subprocesses, one or two
``jax.distributed`` processes), the run receives it once its checkpoint of step 2 is written;
with two processes only one of them gets it, and both must save the same step. A second SIGTERM
follows during a checkpoint's write. In each case the same command then ends where an
uninterrupted run ends: exactly with one process; with two, where the same run ends in one
process on the same 8 devices, to rounding (their collectives sum in another order).
"""

import functools
import os
import signal
import time
import types

import jax
import numpy as np
import pytest

from tests import multiprocess
from tests.test_train import RUN_KEYS, assert_states_close, summary, tiny_config
from train import input_pipeline, placement, train
from train.preemption import PREEMPTED_EXIT_STATUS, Preempted, PreemptionWatch

SIGNAL_AT_STEP = 3  # Between the periodic checkpoints of steps 2 and 4.


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
def test_sigterm_saves_the_step_stops_and_the_same_command_resumes_exactly(
    reference,
    tmp_path,
    monkeypatch,
):
    config, workdir, expected = reference
    real_train_batches = input_pipeline.train_batches
    real_save = train.save_checkpoint

    def signalled_at_step_3(config, *, start_step=0, **kwargs):
        for step, batch in enumerate(real_train_batches(config, start_step=start_step, **kwargs)):
            if start_step + step + 1 == SIGNAL_AT_STEP:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    def save_then_signal_again(manager, placement, state, step):
        real_save(manager, placement, state, step)
        if step == SIGNAL_AT_STEP:  # A second SIGTERM while the write is under way.
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(input_pipeline, "train_batches", signalled_at_step_3)
    monkeypatch.setattr(train, "save_checkpoint", save_then_signal_again)
    with pytest.raises(Preempted) as stopped:
        train.train_and_evaluate(config, str(tmp_path))
    assert stopped.value.code == PREEMPTED_EXIT_STATUS == 75
    assert stopped.value.step == SIGNAL_AT_STEP
    assert f"step {SIGNAL_AT_STEP}" in str(stopped.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
    assert not (tmp_path / "summary.json").exists()
    # The handler is gone with the run: SIGTERM is the default again.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    monkeypatch.setattr(input_pipeline, "train_batches", real_train_batches)
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    state = train.train_and_evaluate(config, str(tmp_path))  # The same command again.
    assert_states_close(state, expected, rtol=1e-6)
    resumed, uninterrupted = summary(tmp_path), summary(workdir)
    assert resumed["steps"] == uninterrupted["steps"]
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]
    assert resumed["test_loss"] == pytest.approx(uninterrupted["test_loss"], rel=1e-6)


def test_the_watch_is_a_flag_only_while_it_is_held():
    previous = signal.getsignal(signal.SIGTERM)
    with PreemptionWatch() as watch:
        assert not watch.reached(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watch.reached(1)
    assert signal.getsignal(signal.SIGTERM) is previous


def wait_for_step_2(processes, workdir, timeout=300):
    """Returns once the run's checkpoint of step 2 is complete (its processes still running).

    Orbax renames a checkpoint's temporary directory to its step only when the write is done, so
    the run is then past step 2 and inside the loop, where SIGTERM is handled; its programs are
    compiled (and in the compilation cache).
    """
    done = os.path.join(workdir, "checkpoints", "2")
    deadline = time.monotonic() + timeout
    while not os.path.isdir(done):
        exited = [p.returncode for p in processes if p.poll() is not None]
        assert not exited, f"a process ended (status {exited}) before step 2 was saved"
        assert time.monotonic() < deadline, "step 2 was not saved in time"
        time.sleep(0.02)


def sigterm_again_during_a_write(processes, workdir):
    """Sends a second SIGTERM to the last process as soon as a checkpoint is being written (orbax
    writes it to ``STEP.orbax-checkpoint-tmp...`` and renames it once complete); whether it did.
    """
    checkpoints = os.path.join(workdir, "checkpoints")
    while all(p.poll() is None for p in processes):
        if any(".orbax-checkpoint-tmp" in name for name in os.listdir(checkpoints)):
            processes[-1].send_signal(signal.SIGTERM)
            return True
        time.sleep(0.001)
    return False


def preempted_step(output):
    """The step that the one line of a preempted process names."""
    lines = [line for line in output.splitlines() if "Preempted (" in line]
    assert len(lines) == 1, output[-3000:]
    return int(lines[0].split("checkpoint of step ")[1].split()[0])


def assert_exit_statuses(processes, outputs, status):
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == status, output[-3000:]


def preempt(workdir, config, flags, processes):
    """Runs the command, sends SIGTERM to its last process once step 2 is saved and again during
    the next checkpoint's write, and checks how every process stopped and what they saved."""
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    started = multiprocess.start_training(workdir, flags, logs=logs, processes=processes)
    wait_for_step_2(started, workdir)
    started[-1].send_signal(signal.SIGTERM)
    assert sigterm_again_during_a_write(started, workdir), "no checkpoint write was seen"
    outputs = multiprocess.finish(started, logs=logs)
    assert_exit_statuses(started, outputs, PREEMPTED_EXIT_STATUS)
    steps = {preempted_step(output) for output in outputs}
    assert len(steps) == 1, f"the processes saved different steps: {steps}"
    (step,) = steps
    # Past the checkpoint that the signal waited for, before the end.
    assert 2 < step < config.num_train_steps, step
    written = sorted({*range(2, step, config.checkpoint_every_steps), step})
    kept = written[-config.max_checkpoints_to_keep :]
    assert sorted(map(int, os.listdir(workdir / "checkpoints"))) == kept
    assert not (workdir / "summary.json").exists()


def run_to_the_end(workdir, flags, processes, meanwhile=lambda: None):
    """Runs the command (again) and checks that every process ends with status 0; calls
    ``meanwhile`` while they run (their waits for each other leave this process a core) and
    returns what it returns."""
    logs = workdir / "logs_to_the_end"
    logs.mkdir(parents=True)
    started = multiprocess.start_training(workdir, flags, logs=logs, processes=processes)
    try:
        result = meanwhile()
    finally:
        outputs = multiprocess.finish(started, logs=logs)
    assert_exit_statuses(started, outputs, 0)
    return result


def final_checkpoint(workdir, config):
    """The params, batch statistics and step of ``workdir``'s newest checkpoint, on one device."""
    one = placement.MeshPlacement(jax.devices()[:1])
    model = train.create_model(config)
    shapes = jax.eval_shape(
        lambda: train.create_train_state(
            jax.random.key(0), config, model, (8, 8, 1), lambda step: 0.0
        )
    )
    host_state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    manager = train.checkpoint_manager(str(workdir), config)
    state = one.first(train.restore_checkpoint(manager, one, host_state))
    manager.close()
    return types.SimpleNamespace(
        step=state.step, params=state.params, batch_stats=state.batch_stats
    )


def assert_ends_like(workdir, uninterrupted_workdir, config, expected):
    """``workdir``'s run ended where the uninterrupted one did, whose final state is
    ``expected``: the final checkpoint's params and batch statistics within 1e-6 per leaf, the
    same step count and test accuracy."""
    assert_states_close(final_checkpoint(workdir, config), expected, rtol=1e-6)
    resumed, uninterrupted = summary(workdir), summary(uninterrupted_workdir)
    assert resumed["steps"] == uninterrupted["steps"] == config.num_train_steps
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]
    assert resumed["test_loss"] == pytest.approx(uninterrupted["test_loss"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
def test_the_command_exits_with_75_on_sigterm_and_the_same_command_resumes_exactly(
    reference,
    tmp_path,
):
    config, workdir, expected = reference
    flags = ["--config.parallelism=pmap", *multiprocess.config_flags(config, RUN_KEYS)]
    preempt(tmp_path / "run", config, flags, processes=1)
    run_to_the_end(tmp_path / "run", flags, processes=1)
    assert_ends_like(tmp_path / "run", workdir, config, expected)


# The preemption service of a process that gets SIGTERM polls for it about once a second
# (measured here: 0.3-0.9 s), and the sync point is the step after the furthest any process had
# reached by then: at 0.7 s a step here, step 4 or 5. Ten steps leave room for a machine three
# times as fast.
MULTI_PROCESS_STEPS = 10


@pytest.mark.slow
def test_two_processes_stop_at_one_step_on_sigterm_and_resume_to_the_one_process_state(
    data_dir, tmp_path
):
    """Two ``jax.distributed`` processes of 4 devices each: SIGTERM to one stops both at one
    step, the same command resumes them, and they end in the state of the same run in this
    process on its 8 devices.

    That comparison is also the test that two processes compute what one does. Their
    collectives sum in another order, so the two agree to rounding, not exactly (measured: at
    most 3.8e-6 of a leaf's largest value after these 10 steps; the tolerance is that of the
    device-count tests of tests/test_train.py, 5e-5, where a wrong reduction is 1e-2 or more);
    the exact resume is checked with one process above. Per-frequency statistics, as there:
    under jit no collective is written by hand, so what two processes add (the global batch
    assembled from each process's rows, the mesh over both) is the same for either statistics.
    """
    config = tiny_config(data_dir, parallelism="jit", num_train_steps=MULTI_PROCESS_STEPS)
    config.sbn_options.per_frequency = True
    keys = (*RUN_KEYS, "sbn_options.per_frequency")
    flags = ["--config.parallelism=jit", *multiprocess.config_flags(config, keys)]
    run, one_process = tmp_path / "run", tmp_path / "one_process"
    preempt(run, config, flags, processes=2)
    in_this_process = functools.partial(train.train_and_evaluate, config, str(one_process))
    # The same command again, and the run in this process meanwhile.
    expected = run_to_the_end(run, flags, processes=2, meanwhile=in_this_process)
    resumed = summary(run)
    assert resumed["processes"] == 2 and resumed["devices"] == 8
    assert resumed["steps"] == summary(one_process)["steps"] == config.num_train_steps
    assert resumed["test_loss"] == pytest.approx(summary(one_process)["test_loss"], rel=1e-5)
    assert_states_close(final_checkpoint(run, config), expected)
