"""The table on stdout and the flat JSON object in ``bench-results.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.measure import Measurement
from tests.bench.scenarios import RATIOS, Scenario


@dataclass(frozen=True)
class Row:
    scenario: Scenario
    measurement: Measurement
    ratio: float | None


def rows(results: Sequence[tuple[Scenario, Measurement]]) -> list[Row]:
    by_key = {scenario.key: measurement for scenario, measurement in results}
    out = []
    for scenario, measurement in results:
        base = by_key.get(scenario.baseline) if scenario.baseline else None
        out.append(Row(scenario, measurement, measurement.per_s / base.per_s if base else None))
    return out


def figures(table: Sequence[Row]) -> dict[str, float]:
    """One key per figure, e.g. ``noop_drain_bare_per_s``, ``noop_drain_ratio_vs_bare``: the
    scenarios' rates and extras, and the ``RATIOS`` whose two scenarios both ran."""
    result: dict[str, float] = {}
    rates = {row.scenario.key: row.measurement.per_s for row in table}
    for row in table:
        key = row.scenario.key
        result[f"{key}_per_s"] = round(row.measurement.per_s, 1)
        for name, value in row.measurement.extra.items():
            result[f"{key}_{name}"] = round(value, 3)
    for ratio_key, (numerator, denominator) in RATIOS.items():
        if numerator in rates and denominator in rates:
            result[ratio_key] = round(rates[numerator] / rates[denominator], 3)
    return result


def cpu(m: Measurement) -> str:
    if "cpu_ms_per_1k" in m.extra:
        return f"{m.extra['cpu_ms_per_1k']:,.0f} ms/1k jobs"
    if "cpu_us_per_msg" in m.extra:
        return f"{m.extra['cpu_us_per_msg']:,.0f} us/msg"
    return ""


def vs_baseline(row: Row) -> str:
    if row.scenario.baseline is None:
        return "baseline"
    return "" if row.ratio is None else f"{row.ratio:.2f}x"  # "": the baseline did not run


def format_table(table: Sequence[Row]) -> str:
    header = ("scenario", "figure", "vs baseline", "runs", "startup", "cpu")
    lines = [header]
    for row in table:
        m = row.measurement
        lines.append(
            (
                row.scenario.label,
                f"{m.per_s:,.0f} {row.scenario.unit}",
                vs_baseline(row),
                " ".join(f"{run:,.0f}" for run in m.runs) if len(m.runs) > 1 else "",
                f"{m.extra['startup_s']:.2f}s" if "startup_s" in m.extra else "",
                cpu(m),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    text.insert(1, "-" * max(len(line) for line in text))
    return "\n".join(text)


def format_ratios(figures: dict[str, float]) -> str:
    return "\n".join(
        f"{key} = {figures[key]:.2f}  ({a} / {b})"
        for key, (a, b) in RATIOS.items()
        if key in figures
    )


def notes(table: Sequence[Row]) -> str:
    return "\n".join(
        f"{row.scenario.key}: {row.measurement.note}" for row in table if row.measurement.note
    )


def merge_json(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """Update ``path`` with ``new``, keeping keys other scenarios wrote; atomic replace."""
    current: dict[str, Any] = {}
    if path.exists():
        loaded = json.loads(path.read_text() or "{}")
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        current = loaded
    current.update(new)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return current
