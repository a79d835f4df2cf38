"""Shared helpers: machine description, interleaved timing, compiled memory, JSON output."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, JAX backend and device kind, versions."""
    import flax

    device = jax.devices()[0]
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "python": platform.python_version(),
    }


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that produced a result: ``python -m <module> <arguments>``."""
    import sys

    return " ".join([f"python -m {module}", *(argv if argv is not None else sys.argv[1:])])


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu_model']}, {info['cpu_cores']} cores; jax {info['jax_version']} backend "
        f"{info['jax_backend']} ({info['device_kind']} x{info['device_count']})"
    )


def compile_fn(fn: Callable, args: Sequence[Any]) -> tuple[Callable, int | None]:
    """AOT-compiles ``jax.jit(fn)`` for ``args``; returns it and its temporary memory in bytes."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    temp = None if analysis is None else int(analysis.temp_size_in_bytes)
    return compiled, temp


def time_interleaved(
    contenders: dict[str, tuple[Callable, Sequence[Any]]], repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Runs every contender once per round, round-robin, so noise hits all of them alike.

    Returns the wall times in seconds of each run (after ``warmup`` untimed rounds), per name.
    """
    for _ in range(warmup):
        for fn, args in contenders.values():
            jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (fn, args) in contenders.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    return times


def time_against_baselines(
    contenders: dict[str, tuple[Callable, Sequence[Any]]],
    results: dict[str, dict[str, Any]],
    baseline_of: Callable[[str], str | None],
    repeats: int,
    warmup: int,
) -> None:
    """Times ``contenders`` round-robin and adds to each entry of ``results`` (which holds its
    ``temp_bytes``) the median, minimum and all times, and the time and memory ratios to the
    entry ``baseline_of(name)`` (None: no ratio)."""
    for name, values in time_interleaved(contenders, repeats, warmup).items():
        results[name].update(median_s=median(values), min_s=min(values), times_s=values)
    for name, entry in results.items():
        base = results.get(baseline_of(name) or "")
        if base is None:
            continue
        entry["time_ratio"] = entry["median_s"] / base["median_s"]
        if entry["temp_bytes"] is not None and base["temp_bytes"]:
            entry["temp_ratio"] = entry["temp_bytes"] / base["temp_bytes"]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write_json(payload: dict[str, Any], name: str, path: str | None = None) -> Path:
    """Writes ``payload`` to ``path`` or ``results/<name>-<UTC time>.json``; returns the path."""
    if path is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS_DIR / f"{name}-{stamp}.json"
    else:
        out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
