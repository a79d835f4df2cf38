"""The API reference of every public name of sbn_jax, from the modules themselves.

``.. sbn-module:: sbn_jax.functional`` (inside an ``{eval-rst}`` block of a MyST page) documents
the module: its docstring, a summary table of its public names and one autodoc entry per name.
A module's public names are its ``__all__``; a module without one (``sbn_jax.linen``,
``sbn_jax.nnx``, ``sbn_jax.diagnostics``, ``sbn_jax.options``) exports the names defined in it
that do not start with ``_``, and its upper-case constants.

An object exported by several modules is documented once, at its home: the public module that
defines it, else the first module in ``MODULES`` that exports it. Every other module that exports
it gets a short entry naming the home, so that ``sbn_jax.functional.SBNOptions`` resolves as
well as ``sbn_jax.options.SBNOptions``. ``tests/test_docs.py`` checks the built inventory against
``public_names``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pathlib
import re
import types
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

# In the order that decides an object's home when it is defined in a private module.
MODULES = (
    "sbn_jax.options",
    "sbn_jax.functional",
    "sbn_jax.family",
    "sbn_jax.linen",
    "sbn_jax.nnx",
    "sbn_jax.models",
    "sbn_jax.diagnostics",
    "sbn_jax",
)
_LONG_VALUE = 120  # constants whose repr is longer are shown without their value


def public_names(module_name: str) -> list[str]:
    """The public names of a module: ``__all__``, or what it defines (see the module docstring)."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        defined_here = getattr(value, "__module__", None) == module_name
        if (defined_here and (inspect.isclass(value) or inspect.isfunction(value))) or (
            name.isupper() and not callable(value)
        ):
            names.append(name)
    return names


def _aliasable(value: Any) -> bool:
    # Strings and numbers may be the same object by interning; only these identify an object.
    return isinstance(value, type | types.FunctionType | types.ModuleType | tuple | dict | list)


@functools.cache  # The same for every module page of a build.
def homes() -> dict[int, str]:
    """``id(object)`` → the full name under which it is documented, for shared objects."""
    found: dict[int, str] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            value = getattr(module, name)
            if not _aliasable(value) or id(value) in found:
                continue
            if isinstance(value, types.ModuleType):
                found[id(value)] = value.__name__
                continue
            defined_in = getattr(value, "__module__", None)
            if defined_in in MODULES and defined_in != module_name:
                found[id(value)] = f"{defined_in}.{getattr(value, '__qualname__', name)}"
            else:
                found[id(value)] = f"{module_name}.{name}"
    return found


def _alias(module_name: str, name: str, value: Any, home: str) -> list[str]:
    # An entry of the same object type as the home's, so that :class: and :func: roles find it.
    if inspect.isclass(value):
        kind, role, what = "class", "class", "class"
    elif inspect.isfunction(value):
        kind, role, what = "function", "func", "function"
    else:
        kind, role, what = "data", "data", "value"
    return [
        f".. py:{kind}:: {name}",
        f"   :module: {module_name}",
        "",
        f"   Re-exported: the same {what} as :py:{role}:`{home}`.",
        "",
    ]


def _entry(module_name: str, name: str, value: Any, home: str | None) -> list[str]:
    full = f"{module_name}.{name}"
    if isinstance(value, types.ModuleType):
        return []  # the module's own page is its entry
    if home is not None and home != full:
        return _alias(module_name, name, value, home)
    if inspect.isclass(value):
        return [
            f".. autoclass:: {full}",
            "   :members:",
            "   :special-members: __call__",
            "",
        ]
    if callable(value):
        return [f".. autofunction:: {full}", ""]
    lines = [f".. autodata:: {full}"]
    if len(repr(value)) > _LONG_VALUE:
        lines.append("   :no-value:")
    return [*lines, ""]


def module_rst(module_name: str) -> list[str]:
    """The reStructuredText of one module's reference."""
    module = importlib.import_module(module_name)
    names = public_names(module_name)
    shared = homes()
    lines = [f".. automodule:: {module_name}", "", ".. autosummary::", ""]
    lines += [f"   {name}" for name in names]
    lines.append("")
    for name in names:
        value = getattr(module, name)
        home = shared.get(id(value)) if _aliasable(value) else None
        lines += _entry(module_name, name, value, home)
    return lines


class ModuleReference(SphinxDirective):
    """``.. sbn-module:: NAME``: the reference of one module of sbn_jax."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        container = nodes.container()
        source = f"<sbn-module {module_name}>"
        content = StringList(module_rst(module_name), source=source)
        self.state.nested_parse(content, self.content_offset, container)
        return list(container.children)


_BUILTIN_TYPES = (dict, tuple, list, frozenset, set, str, int, float, re.Pattern)


def _comment_above(full_name: str) -> list[str]:
    """The ``#`` comment block right above the assignment of a constant, in the file defining it."""
    module_name, name = full_name.rsplit(".", 1)
    own = pathlib.Path(importlib.import_module(module_name).__file__ or "")
    package = pathlib.Path(importlib.import_module("sbn_jax").__file__ or "").parent
    assignment = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
    for path in [own, *sorted(package.rglob("*.py"))]:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if assignment.match(line):
                above = []
                while index > 0 and lines[index - 1].startswith("#"):
                    index -= 1
                    above.insert(0, lines[index].lstrip("#").strip())
                return above
    return []


def _drop_builtin_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # A constant without a doc comment would otherwise show the docstring of its type (dict's);
    # it shows the source comment above its assignment instead, where there is one.
    if what not in ("data", "attribute"):
        return
    if isinstance(obj, _BUILTIN_TYPES):
        type_doc = inspect.getdoc(type(obj)) or ""
        if lines and type_doc and lines[0].strip() == type_doc.splitlines()[0].strip():
            lines[:] = []
    if what == "data" and not any(line.strip() for line in lines):
        lines[:] = _comment_above(name)


def _skip_tuple_fields(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    # NamedTuple fields are documented by their class's Attributes section.
    if type(obj).__name__ == "_tuplegetter":
        return True
    return None


_NAME_LIST = re.compile(r"^(\s+)(\w+, )*\w+,$")
_PLACEHOLDER = re.compile(r"^(\s*):ivar \(([^)]*)\):")


def _join_name_lists(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # Before napoleon: "a, b,\n  c: text" in an Args section is one entry for a, b and c.
    index = 0
    while index < len(lines) - 1:
        line, following = lines[index], lines[index + 1]
        indent = len(line) - len(line.lstrip())
        if _NAME_LIST.match(line) and len(following) - len(following.lstrip()) == indent:
            lines[index : index + 2] = [f"{line} {following.strip()}"]
        else:
            index += 1


def _placeholder_fields(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # After napoleon: ":ivar (every option):" would read "(every" as a type to cross-reference.
    for index, line in enumerate(lines):
        lines[index] = _PLACEHOLDER.sub(lambda m: f"{m[1]}:ivar ({m[2].replace(' ', '-')}):", line)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _join_name_lists, priority=400)
    app.connect("autodoc-process-docstring", _placeholder_fields, priority=600)
    app.add_directive("sbn-module", ModuleReference)
    app.connect("autodoc-process-docstring", _drop_builtin_docstring)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
