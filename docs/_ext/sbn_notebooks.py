"""The committed notebooks, as pages of the site.

Sphinx reads sources from docs/ only, so each build starts from a fresh copy of notebooks/*.ipynb
in docs/notebooks/ (git-ignored). The notebooks are rendered from their committed outputs, never
executed. Most of them save their figures to docs/figures/ and show none inline (their plots are
made under a non-interactive backend); so that the pages show them, the copy of a cell that saves
``FIGURES / "NAME.png"`` and has no image among its outputs gets that committed figure as one.
The notebooks themselves are not changed.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import shutil
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config

_SAVED = re.compile(r'savefig\(FIGURES / "([^"]+\.png)"')


def with_figures(notebook: dict[str, Any], figures: pathlib.Path) -> dict[str, Any]:
    """``notebook`` with each saved figure shown below the cell that saves it."""
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        outputs = cell.setdefault("outputs", [])
        if any("image/png" in output.get("data", {}) for output in outputs):
            continue
        for name in _SAVED.findall("".join(cell["source"])):
            path = figures / name
            if path.exists():
                outputs.append(
                    {
                        "output_type": "display_data",
                        "data": {
                            "image/png": base64.b64encode(path.read_bytes()).decode("ascii"),
                            "text/plain": [f"docs/figures/{name}"],
                        },
                        "metadata": {},
                    }
                )
    return notebook


def copy_notebooks(app: Sphinx, config: Config) -> None:
    docs = pathlib.Path(app.srcdir)
    target = docs / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for source in sorted((docs.parent / "notebooks").glob("*.ipynb")):
        notebook = with_figures(json.loads(source.read_text()), docs / "figures")
        (target / source.name).write_text(json.dumps(notebook, indent=1))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", copy_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
