"""Executes every notebook in notebooks/ and fails on the first cell that raises.

The kernel is this interpreter (``sys.executable``), declared in a kernelspec
written to a temporary ``JUPYTER_PATH``, so the test works in any virtualenv
where ``pip install -e .[dev,train,notebooks]`` ran, with nothing registered
globally. The notebooks run on one CPU device: the eight virtual devices that
conftest.py configures for this process, and its fast-compile flag (the
notebooks train), are removed from the kernel's ``XLA_FLAGS``. The executed
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
KERNEL_NAME = "sbn-jax-test"
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def figures_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory, figures_dir):
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    flags = os.environ.get("XLA_FLAGS", "").split()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sbn_jax tests",
        "language": "python",
        "env": {
            "XLA_FLAGS": " ".join(
                f
                for f in flags
                if "device_count" not in f and "xla_backend_optimization_level" not in f
            ),
            "MPLBACKEND": "agg",
            "SBN_JAX_FIGURES": str(figures_dir),
            "SBN_JAX_NOTEBOOK_QUICK": "1",
        },
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))
        yield KERNEL_NAME


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors_and_saves_its_figures(path, kernel_name, figures_dir):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
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
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.get("outputs") for cell in code if "print(" in cell.source), path.name
