"""Executes every notebook in notebooks/ and fails on the first cell that raises.

The kernel is this interpreter (``sys.executable``), declared in a kernelspec
written to a temporary ``JUPYTER_PATH``, so the test works in any virtualenv
where ``pip install -e .[dev,train,notebooks]`` ran, with nothing registered
globally. The notebooks run on one CPU device: the eight virtual devices that
conftest.py configures for this process are removed from the kernel's
``XLA_FLAGS``, and its optimization level is raised from 0 to 1
(tests/compile_flags.py). The executed copies are discarded; the committed
notebooks keep their outputs, and the figures go to a temporary directory
(``SBN_JAX_FIGURES``) so that a test run leaves ``docs/figures`` as committed.
``SBN_JAX_NOTEBOOK_QUICK`` tells a notebook that trains or measures live (02, 04)
to do less of it: every cell still runs.
"""

import json
import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from tests import compile_flags

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def figures_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory, figures_dir):
    """A kernelspec for this interpreter, one device, the notebooks' XLA flags."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    name = "sbn-jax-test"
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "env": {
            "XLA_FLAGS": compile_flags.for_notebooks(os.environ["XLA_FLAGS"]),
            "MPLBACKEND": "agg",
            "SBN_JAX_FIGURES": str(figures_dir),
            "SBN_JAX_NOTEBOOK_QUICK": "1",
        },
    }
    spec_dir = jupyter_path / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))
        yield name


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
