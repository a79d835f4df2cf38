"""The shape limits the code keeps (issue 14): short functions, short modules, one dispatch."""

import ast
from pathlib import Path

import ml_collections
import pytest

from sbn_jax import functional
from train import train
from train.configs import default

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [
        *(ROOT / "sbn_jax").rglob("*.py"),
        *(ROOT / "train").rglob("*.py"),
        *(ROOT / "docs").glob("*.py"),
        *(ROOT / "docs" / "_ext").glob("*.py"),
    ]
)
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, path
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_every_impl_but_auto_is_one_implementation():
    assert set(functional.IMPLS) == {"auto", *functional.IMPLEMENTATIONS}


def test_with_defaults_fills_missing_settings_and_keeps_extra_ones():
    partial = ml_collections.ConfigDict({"model": "cifar_resnet56", "paper": {"table": "I"}})
    config = train.with_defaults(partial)
    reference = default.get_config()
    assert config.model == "cifar_resnet56" and config.paper.table == "I"
    for key in reference:
        if key != "model":
            assert config[key] == reference[key], key
    # The loop reads settings by attribute: a missing one would raise, not fall back silently.
    assert set(config) == set(reference) | {"paper"}
