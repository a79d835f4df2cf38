"""The documentation site: its Python examples run as written, and its API reference is complete.

Every ```python block of every page in docs/ runs here, as the README's do in test_readme.py.
The site itself is built by ``make docs`` (part of ``make test``, warnings as errors); the tests
of the API reference (every public name listed, every class and function with its docstring) read
that build, or build the site once into a temporary folder when there is none.
"""

import importlib
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if not p.relative_to(DOCS).parts[0].startswith("_"))
FENCE = re.compile(
    r"^(`{3,})(?:python|\{code-cell\} python(?:3)?)[ \t]*\n(.*?)^\1[ \t]*$", re.M | re.S
)
EXAMPLES = [
    (page.relative_to(DOCS), index, match.group(2))
    for page in PAGES
    for index, match in enumerate(FENCE.finditer(page.read_text()))
]
# The modules whose public names the API reference must list.
MODULES = (
    "sbn_jax",
    "sbn_jax.options",
    "sbn_jax.functional",
    "sbn_jax.family",
    "sbn_jax.linen",
    "sbn_jax.nnx",
    "sbn_jax.models",
    "sbn_jax.diagnostics",
)


def test_docs_have_examples_on_the_pages_that_teach_usage():
    pages = {str(page) for page, _, _ in EXAMPLES}
    assert {"getting_started.md", "beyond.md"} <= pages
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize(
    ("page", "index", "code"), EXAMPLES, ids=[f"{p}-{i}" for p, i, _ in EXAMPLES]
)
def test_docs_example_runs(page, index, code):
    exec(compile(code, f"docs/{page} example {index}", "exec"), {"__name__": "docs"})


# The tests that read the site run on one pytest-xdist worker: where there is no make docs build,
# two workers building at once would both rewrite docs/notebooks/ (docs/_ext/sbn_notebooks.py).
ON_ONE_WORKER = pytest.mark.xdist_group("docs_site")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    """The built site: make docs's, or, when there is none, one built here."""
    built = DOCS / "_build" / "html"
    if (built / "objects.inv").exists():
        return built
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(DOCS), str(out)], check=True
    )
    return out


@pytest.fixture(scope="module")
def documented(site) -> set[str]:
    """Every Python object the built site documents, by full name (its objects.inv)."""
    from sphinx.util.inventory import InventoryFile

    inventory = InventoryFile.loads((site / "objects.inv").read_bytes(), uri="")
    return {
        name
        for kind, entries in inventory.data.items()
        if kind.startswith("py:")
        for name in entries
    }


def _public(module_name: str) -> list[str]:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import sbn_api
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return sbn_api.public_names(module_name)


@ON_ONE_WORKER
@pytest.mark.parametrize("module_name", MODULES)
def test_api_reference_lists_every_public_name(module_name, documented):
    module = importlib.import_module(module_name)
    names = _public(module_name)
    if hasattr(module, "__all__"):
        assert names == list(module.__all__)
    assert names, module_name
    assert module_name in documented
    missing = [name for name in names if f"{module_name}.{name}" not in documented]
    assert not missing, f"{module_name}: not in the API reference: {missing}"


def test_public_names_of_modules_without_all_are_what_they_define():
    assert {"SpectralBatchNorm", "SpatialSpectralBatchNorm", "SpectralGroupNorm"} <= set(
        _public("sbn_jax.linen")
    )
    assert {"SBNOptions", "DIVIDE_BY", "IMPLS"} <= set(_public("sbn_jax.options"))
    assert "summarize" in _public("sbn_jax.diagnostics")
    # Imported helpers are not the module's names.
    assert not {"nn", "jax", "jnp", "Any", "functional", "SBNOptions"} & set(
        _public("sbn_jax.linen")
    )


def test_notebook_pages_show_the_figures_their_cells_save():
    import json

    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import sbn_notebooks
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    source = ROOT / "notebooks" / "02_exploding_feature_maps.ipynb"
    notebook = json.loads(source.read_text())
    before = json.dumps(notebook)
    page = sbn_notebooks.with_figures(json.loads(before), DOCS / "figures")
    images = [
        output
        for cell in page["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 1
    assert images[0]["data"]["text/plain"] == ["docs/figures/02_exploding_feature_maps.png"]
    # Outputs the notebook already has are kept, and a cell that shows its figure gets no copy.
    assert json.loads(before) == notebook
    shown = json.loads((ROOT / "notebooks" / "05_open_question.ipynb").read_text())
    count = sum(
        "image/png" in o.get("data", {}) for c in shown["cells"] for o in c.get("outputs", [])
    )
    again = sbn_notebooks.with_figures(shown, DOCS / "figures")
    assert count == sum(
        "image/png" in o.get("data", {}) for c in again["cells"] for o in c.get("outputs", [])
    )


def _words(text: str) -> list[str]:
    # Words of three letters or more, without reStructuredText role names (":func:", ":class:").
    return re.findall(r"[A-Za-z]{3,}", re.sub(r":[a-z]+(:[a-z]+)?:`", "`", text))


@ON_ONE_WORKER
@pytest.mark.parametrize("module_name", MODULES)
def test_api_pages_show_each_docstring(module_name, site):
    """Each public class and function defined for this page shows its docstring's summary."""
    import html as html_lib
    import inspect

    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import sbn_api
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    page = site / "api" / f"{module_name}.html"
    text = " ".join(_words(html_lib.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))))
    homes = sbn_api.homes()
    module = importlib.import_module(module_name)
    checked = 0
    for name in _public(module_name):
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if homes.get(id(value)) != f"{module_name}.{name}":
            continue  # documented at its home; here only a pointer
        summary = " ".join(_words(inspect.getdoc(value).splitlines()[0])[:6])
        assert summary and summary in text, f"{module_name}.{name}: {summary!r} not on its page"
        checked += 1
    assert checked or module_name == "sbn_jax"
