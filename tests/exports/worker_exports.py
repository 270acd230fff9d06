"""Exports over the probe table ``exports_probe`` (tests/exports/probe.py), known to the test
process and, through ``--include``, to the worker processes the tests start."""

from __future__ import annotations

from tasks.exports.registry import Export, export_register

TABLE = "exports_probe"

export_register(
    Export(
        name="probe",
        sql=f"SELECT id, label, amount, created, flag, note FROM {TABLE} ORDER BY id",  # noqa: S608
        allowed=lambda user: True,
    )
)
#: About 2 ms a row, streamed as PostgreSQL makes them (no ORDER BY to wait for), not counted
#: first: a job that runs long enough to be cancelled or killed halfway.
export_register(
    Export(
        name="probe_slow",
        sql=f"SELECT id, label FROM {TABLE} WHERE pg_sleep(0.002)::text = ''",  # noqa: S608
        allowed=lambda user: True,
        count_first=False,
    )
)
#: The big-data tests' tables (tests/exports/test_big.py) by their rows; each one's export is
#: named after it, as ``probe_export(rows, table=...)`` names it in the test process.
BIG_TABLES = {
    100_000: "exports_probe_100k",
    1_000_000: "exports_probe_1m",
    2_000_000: "exports_probe_2m",
}
for big in BIG_TABLES.values():
    export_register(
        Export(
            name=big,
            sql=f"SELECT id, label, amount, created, flag, note FROM {big} ORDER BY id",  # noqa: S608
            allowed=lambda user: True,
        )
    )
