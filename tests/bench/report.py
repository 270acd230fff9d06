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
        out.append(Row(scenario, measurement, measurement.value / base.value if base else None))
    return out


def figures(table: Sequence[Row]) -> dict[str, float]:
    """One key per figure, e.g. ``noop_drain_bare_per_s``, ``enqueue_p99_ms``,
    ``noop_drain_ratio_vs_bare``: the scenarios' figures and extras, and the ``RATIOS`` whose two
    scenarios both ran."""
    result: dict[str, float] = {}
    values = {row.scenario.key: row.measurement.value for row in table}
    for row in table:
        key = row.scenario.key
        result[f"{key}_{row.scenario.figure}"] = round(
            row.measurement.value, 3 if latency(row) else 1
        )
        for name, value in row.measurement.extra.items():
            result[f"{key}_{name}"] = round(value, 3)
    for ratio_key, (numerator, denominator) in RATIOS.items():
        if numerator in values and denominator in values:
            result[ratio_key] = round(values[numerator] / values[denominator], 3)
    return result


def latency(row: Row) -> bool:
    return row.scenario.figure.endswith("_ms")


def number(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def figure(row: Row) -> str:
    m = row.measurement
    if latency(row):
        return f"p99 {number(m.value)} ms, p50 {number(m.extra.get('p50_ms', float('nan')))}"
    return f"{number(m.value)} {row.scenario.unit}"


def cpu(m: Measurement) -> str:
    """The process's CPU time, then the PostgreSQL server's when measured."""
    if "cpu_ms_per_1k" in m.extra:
        text = f"{m.extra['cpu_ms_per_1k']:,.0f} ms/1k jobs"
        if "db_cpu_ms_per_1k" in m.extra:
            text += f" + db {m.extra['db_cpu_ms_per_1k']:,.0f}"
        return text
    if "cpu_us_per_row" in m.extra:
        text = f"{m.extra['cpu_us_per_row']:,.2f} us/row"
        if "db_cpu_us_per_row" in m.extra:
            text += f" + db {m.extra['db_cpu_us_per_row']:,.2f}"
        return text
    if "cpu_us_per_msg" in m.extra:
        text = f"{m.extra['cpu_us_per_msg']:,.0f} us/msg"
        if "db_cpu_us_per_msg" in m.extra:
            text += f" + db {m.extra['db_cpu_us_per_msg']:,.0f}"
        return text
    return ""


def vs_baseline(row: Row, baselines: set[str]) -> str:
    if row.scenario.baseline is None:
        return "baseline" if row.scenario.key in baselines else ""
    return "" if row.ratio is None else f"{row.ratio:.2f}x"  # "": the baseline did not run


def format_table(table: Sequence[Row]) -> str:
    header = ("scenario", "figure", "vs baseline", "runs", "startup", "cpu")
    lines = [header]
    baselines = {row.scenario.baseline for row in table if row.scenario.baseline}
    for row in table:
        m = row.measurement
        lines.append(
            (
                row.scenario.label,
                figure(row),
                vs_baseline(row, baselines),
                " ".join(number(run) for run in m.runs) if len(m.runs) > 1 else "",
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
