"""SIGTERM: the loop saves the step it is in, stops with exit status 75, and resumes exactly.

The run receives a real SIGTERM (sent to this process) while it fetches a batch; the same
command then ends where the uninterrupted reference run of tests/test_train.py ends.
"""

import os
import signal

import pytest

from tests.test_train import assert_states_close, reference, summary  # noqa: F401 (fixture)
from train import input_pipeline, train
from train.preemption import PREEMPTED_EXIT_STATUS, Preempted, PreemptionWatch

SIGNAL_AT_STEP = 3  # Between the periodic checkpoints of steps 2 and 4.


@pytest.mark.slow
@pytest.mark.xdist_group("reference")
def test_sigterm_saves_the_step_stops_and_the_same_command_resumes_exactly(
    reference,  # noqa: F811 (the fixture imported above)
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
