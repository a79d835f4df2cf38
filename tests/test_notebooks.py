"""Executes every notebook in notebooks/ and fails on the first cell that raises.

The kernel is this interpreter (``sys.executable``), declared in a kernelspec
written to a temporary ``JUPYTER_PATH``, so the test works in any virtualenv
where ``pip install -e .[dev,train,notebooks]`` ran, with nothing registered
globally. The notebooks run on one CPU device: the eight virtual devices that
conftest.py configures for this process are removed from the kernel's
``XLA_FLAGS``. Its fast-compile flag is kept for the notebooks whose time is
mostly compiling and removed for those that mostly run (``OPTIMIZED``). The executed
copies are discarded; the committed notebooks keep their outputs, and the
figures go to a temporary directory (``SBN_JAX_FIGURES``) so that a test run
leaves ``docs/figures`` as committed. ``SBN_JAX_NOTEBOOK_QUICK``
tells a notebook that trains live (04) to train fewer seeds and steps: every
cell still runs.
"""

import json
import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600
# Notebooks whose quick mode spends most of its time running compiled steps, not compiling
# them, get XLA's full optimization. Measured alone on a 2-core CPU, full optimization / fast
# compile: 04 80 s / 140 s, 06 11 s / 13 s; 01 35 s / 26 s, 02 55 s / 48 s, 03 55 s / 39 s,
# 05 and 07 the same within a second.
OPTIMIZED = {"04_training_digits.ipynb", "06_spectral_family.ipynb"}


@pytest.fixture(scope="module")
def figures_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


@pytest.fixture(scope="module")
def kernel_names(tmp_path_factory, figures_dir):
    """Two kernelspecs, by whether the notebook keeps conftest.py's fast-compile flag."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    names = {}
    for optimized in (False, True):
        name = "sbn-jax-test" + ("-optimized" if optimized else "")
        kept = [f for f in flags if not (optimized and "xla_backend_optimization_level" in f)]
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": name,
            "language": "python",
            "env": {
                "XLA_FLAGS": " ".join(kept),
                "MPLBACKEND": "agg",
                "SBN_JAX_FIGURES": str(figures_dir),
                "SBN_JAX_NOTEBOOK_QUICK": "1",
            },
        }
        spec_dir = jupyter_path / "kernels" / name
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        names[optimized] = name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))
        yield names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors_and_saves_its_figures(path, kernel_names, figures_dir):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_names[path.name in OPTIMIZED],
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    # Figures are named after their notebook's number, e.g. 02_exploding_feature_maps.png.
    saved = sorted(figures_dir.glob(f"{path.name[:3]}*.png"))
    assert saved, f"{path.name} saved no figure to {figures_dir}"
    assert all(figure.stat().st_size > 10_000 for figure in saved), saved


def test_notebooks_are_committed_with_outputs():
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    assert OPTIMIZED.issubset(path.name for path in NOTEBOOKS), OPTIMIZED
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.get("outputs") for cell in code if "print(" in cell.source), path.name
