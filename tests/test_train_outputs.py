"""The loop's opt-in outputs (issue 22): per-image test predictions and per-block output norms.

Runs of CIFAR ResNet-20 with BN + SBN on the digits for a few steps, on one device, with an
eval batch that leaves the last batch of each split padded (the padding must be dropped).
"""

import functools
import json
import os

import jax
import numpy as np
import pytest

from sbn_jax import models
from tests.test_train import summary, tiny_config
from train import checkpoints, input_pipeline, placement, train

EVAL_BATCH = 100  # 360 test images (and the validation split): the last batch is padded.
BLOCKS = [f"BasicBlock_{i}" for i in range(3)]  # tiny_config's ResNet-8: 3 stages of 1, in order.


def outputs_config(data_dir, **overrides):
    """test_train's tiny run on one device (ReLU, the default) for 4 steps, evaluated every 2."""
    settings = dict(eval_batch_size=EVAL_BATCH, num_devices=1, num_train_steps=4)
    settings.update(eval_every_steps=2, activation="relu")
    return tiny_config(data_dir, **{**settings, **overrides})


def block_norm_records(workdir):
    with open(os.path.join(workdir, "block_norms.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("parallelism", ["pmap", "jit"])
def test_gather_rows_gives_the_global_batch_in_order(parallelism):
    """Eight devices, each with a slice of the batch: the rows come back whole and in order."""
    where = placement.PLACEMENTS[parallelism](jax.devices())
    batch = {"label": np.arange(32, dtype=np.int32)}
    step = where.compile(
        lambda state, batch, axis_name: {"prediction": batch["label"] * 2 + state}, donate=False
    )
    rows = where.gather_rows(step(where.put_state(np.int32(1)), where.put_batch(batch)))
    np.testing.assert_array_equal(rows["prediction"], 2 * np.arange(32) + 1)


def check_predictions(config, workdir):
    """The saved predictions of the test split against summary.json and the split; returns them."""
    result = summary(workdir)
    assert result["test_predictions"] == "test_predictions.npz"
    with np.load(os.path.join(workdir, result["test_predictions"])) as saved:
        prediction, label = saved["prediction"], saved["label"]
    _, split_labels = input_pipeline.load_arrays(config, input_pipeline.eval_split(config))
    assert prediction.dtype == label.dtype == np.uint8
    assert prediction.shape == label.shape == split_labels.shape == (360,)
    np.testing.assert_array_equal(label, split_labels)  # The split's order, padding dropped.
    assert np.mean(prediction == label) == result["test_accuracy"]
    return prediction


def check_block_norms(workdir, steps):
    """One record per evaluation, each with a positive finite norm for every block."""
    records = block_norm_records(workdir)
    assert [record["step"] for record in records] == steps
    for record in records:
        assert list(record["norms"]) == BLOCKS
        assert all(np.isfinite(value) and value > 0 for value in record["norms"].values())
    return records


def direct_block_norms(config, state, images):
    """Mean over ``images`` of each block's output norm, from the model's captured outputs."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    @jax.jit
    def outputs(variables, images):
        _, captured = train.create_model(config).apply(
            variables,
            images,
            train=False,
            capture_intermediates=lambda module, name: isinstance(module, models.BLOCK_TYPES),
            mutable=["intermediates"],
        )
        return {name: value["__call__"][0] for name, value in captured["intermediates"].items()}

    return {
        name: float(np.mean(np.linalg.norm(np.reshape(x, (len(x), -1)).astype(np.float64), axis=1)))
        for name, x in jax.device_get(outputs(variables, images)).items()
    }


# Each run costs ~30 s on the 2-core machine, so each test checks both outputs, and the run with
# neither is the default one of tests/test_train.py (test_reference_run_writes_outputs).
@pytest.mark.slow
def test_last_state_predictions_and_block_norms(data_dir, tmp_path):
    """pmap, no validation split: the last state's test pass; norms at step 0 and at the end."""
    config = outputs_config(
        data_dir,
        parallelism="pmap",
        eval_every_steps=0,  # One eval program fewer: the final pass is the predicting one.
        checkpoint_every_steps=4,
        save_test_predictions=True,
        record_block_norms=True,
    )
    train.train_and_evaluate(config, str(tmp_path))
    check_predictions(config, str(tmp_path))
    records = check_block_norms(str(tmp_path), [0, 4])
    assert records[1] != records[0]  # Training moved the norms.
    # Step 0: the initial state on the first eval batch of the test split.
    state = train.create_train_state(
        jax.random.key(config.seed), config, train.create_model(config), (8, 8, 1), lambda _: 0.0
    )
    batch = next(input_pipeline.eval_batches(config))
    assert batch["mask"].all() and len(batch["mask"]) == EVAL_BATCH
    expected = direct_block_norms(config, state, batch["image"])
    assert records[0]["norms"] == pytest.approx(expected, rel=1e-5)


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.mark.slow
def test_best_validation_predictions_and_block_norms_after_a_resume(
    data_dir, tmp_path, monkeypatch
):
    """jit, validation split: killed at step 5 of 6 (checkpoint at 3, evaluations every 2
    steps), then resumed: the record of step 4 is dropped and written again, once."""
    config = outputs_config(
        data_dir,
        parallelism="jit",
        validation_fraction=0.1,
        num_train_steps=6,
        checkpoint_every_steps=3,
        save_test_predictions=True,
        record_block_norms=True,
    )
    real_train_batches = input_pipeline.train_batches

    def dies_at_step_5(config, *, start_step=0, **kwargs):
        for step, batch in enumerate(real_train_batches(config, start_step=start_step, **kwargs)):
            if start_step + step + 1 == 5:
                raise Killed
            yield batch

    # Step 2 is made the best validation step, so that the reported test pass is not the last
    # state's (whose predictions differ from step 2's in 26 of the 360 images).
    real_offer = checkpoints.BestValidation.offer

    def step_2_is_best(self, placement, state, step, accuracy):
        real_offer(self, placement, state, step, accuracy if step == 2 else -1.0)

    monkeypatch.setattr(checkpoints.BestValidation, "offer", step_2_is_best)
    monkeypatch.setattr(input_pipeline, "train_batches", dies_at_step_5)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path))
    before = check_block_norms(str(tmp_path), [0, 2, 4])
    monkeypatch.setattr(input_pipeline, "train_batches", real_train_batches)
    state = train.train_and_evaluate(config, str(tmp_path))  # Resumes after step 3.

    records = check_block_norms(str(tmp_path), [0, 2, 4, 6])
    assert records[:2] == before[:2]
    assert records[2]["norms"] == pytest.approx(before[2]["norms"], rel=1e-5)
    prediction = check_predictions(config, str(tmp_path))
    # They are the predictions of the returned state, the best validation step's (the program
    # the run compiled, found in the compilation cache).
    assert int(state.step) == summary(tmp_path)["selected_step"] == 2
    where = placement.MeshPlacement(jax.devices()[:1])
    step = where.compile(functools.partial(train.eval_step, predict=True), donate=False)
    expected = []
    for batch in input_pipeline.eval_batches(config):
        rows = where.gather_rows(step(where.put_state(state), where.put_batch(batch))[1])
        expected.append(rows["prediction"][batch["mask"] > 0])
    np.testing.assert_array_equal(prediction, np.concatenate(expected))
