"""Sphinx configuration of the sbn_jax documentation site (``make docs``).

The site needs no network to build: no intersphinx inventories are fetched, and the notebooks are
rendered from their committed outputs (``nb_execution_mode = "off"``). ``make docs`` builds with
warnings as errors and nitpicky cross-references; only names of other packages may be ignored.
"""

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(DOCS / "_ext"), str(ROOT)]

project = "sbn_jax"
author = "the sbn_jax authors"
copyright = "the sbn_jax authors, Apache-2.0"
release = version = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into the site: math renders without a CDN
    "sbn_api",
    "sbn_notebooks",  # notebooks/ copied into docs/notebooks/ (git-ignored) at each build
]

exclude_patterns = ["_build", "_ext", ".ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
nb_execution_mode = "off"
highlight_language = "none"  # fences without a language (commands, printed output) stay plain
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: NamedTuple fields are not described twice
add_module_names = False

# Nitpicky mode: every cross-reference must resolve. Without intersphinx, names of other packages
# cannot; they, and only they, are ignored here. Our own names must always resolve.
nitpick_ignore_regex = [
    ("py:.*", r"(jax|jaxlib|flax|numpy|np|jnp|nn|nnx|optax|chex|typing|collections|types)(\..*)?"),
    ("py:.*", r"(Array|ArrayLike|Shape|Dtype|DTypeLike|PRNGKey|Initializer|Filter|Axes|Any)"),
    ("py:.*", r"(dataclasses|abc|enum|functools)(\..*)?"),
    ("py:.*", r"(Mapping|Sequence|Callable|Iterable|Iterator)(\[.*)?"),
]

html_theme = "sphinx_book_theme"
html_title = "sbn_jax"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_last_updated_fmt = None
