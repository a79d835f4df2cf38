"""Plants one representative bug into the checkout in the current directory (issue 21).

    python tools/plant_bug.py BUG      # BUG: one of BUGS

Used by tools/planted_bugs.sh, which plants each bug in a scratch clone and runs the tests that
must catch it: a check that the test suite, made faster, still fails on the bugs it guards against.
"""

import sys

import nbformat

BUGS = (
    "first_row_off_by_one",
    "running_variance_factor",
    "no_device_mean",
    "recipe_wrong_placement",
    "notebook_cell_raises",
    "pmap_gradients_not_averaged",
    "traced_recipe_bad_setting",
    "mask_fraction_per_device",
    "processes_read_the_same_rows",
    "resume_one_batch_early",
    "dropout_key_dropped",
)


def sub(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text, (path, old)
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))


bug = sys.argv[1]
if bug == "first_row_off_by_one":
    sub(
        "sbn_jax/_closed_form.py",
        "k = np.arange(bins)[None, :]",
        "k = np.arange(bins - 1)[None, :]",
    )
elif bug == "running_variance_factor":
    sub(
        "sbn_jax/functional.py",
        "var=batch.var * variance_factor,",
        "var=batch.var * variance_factor * 1.25,",
    )
elif bug == "no_device_mean":
    sub("sbn_jax/options.py", "        if self.axis_name is None:", "        if True:")
elif bug == "recipe_wrong_placement":
    sub(
        "train/configs/paper/cifar10_resnet50.py",
        """    return common.paper_config(
        dataset="cifar10", model="cifar_resnet50", variant=variant, rows=ROWS, table="Table I"
    )""",
        """    config = common.paper_config(
        dataset="cifar10", model="cifar_resnet50", variant=variant, rows=ROWS, table="Table I"
    )
    config.norm = config.norm.replace("34", "4")
    return config""",
    )
elif bug == "notebook_cell_raises":
    path = "notebooks/06_spectral_family.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[2].source = code[2].source.replace("seeds = sorted(", "seeds = sortedd(", 1)
    assert "sortedd" in code[2].source
    nbformat.write(nb, path)
elif bug == "pmap_gradients_not_averaged":
    sub("train/train.py", "        grads = jax.lax.pmean(grads, axis_name)\n", "")
elif bug == "traced_recipe_bad_setting":
    sub(
        "train/configs/paper/cifar100_vgg19_bn.py",
        """    return common.paper_config(
        dataset="cifar100", model="vgg19_bn", variant=variant, rows=ROWS, table="Table II"
    )""",
        """    config = common.paper_config(
        dataset="cifar100", model="vgg19_bn", variant=variant, rows=ROWS, table="Table II"
    )
    config.label_smoothing = "0.1"
    return config""",
    )
elif bug == "mask_fraction_per_device":
    sub(
        "sbn_jax/options.py",
        "return self.pmean(jnp.mean(mask, dtype=dtype))",
        "return jnp.mean(mask, dtype=dtype)",
    )
elif bug == "processes_read_the_same_rows":
    sub(
        "train/train.py",
        "input_pipeline.Sharding(jax.process_index(), jax.process_count())",
        "input_pipeline.Sharding(0, jax.process_count())",
    )
elif bug == "resume_one_batch_early":
    sub(
        "train/train.py",
        "train_batches(config, start_step=start_step, sharding=sharding)",
        "train_batches(config, start_step=max(start_step - 1, 0), sharding=sharding)",
    )
elif bug == "dropout_key_dropped":
    sub("train/train.py", "    if dropout_key is not None:\n", "    if False:\n")
else:
    raise SystemExit(f"unknown bug {bug!r}; choose one of {BUGS}")
