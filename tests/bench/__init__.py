"""Throughput benchmark of the template against bare Celery, on the real local RabbitMQ.

Run it with ``make bench`` (``uv run python -m tests.bench``). Every scenario gets a RabbitMQ vhost
of its own, deleted afterwards, and the PostgreSQL ones a database of their own, dropped afterwards
(local server, 127.0.0.1:5432, user postgres); figures go to a table on stdout and to
``bench-results.json``.

- ``rabbit``: throwaway vhosts and queue depths.
- ``postgres``: throwaway databases (copies of one migrated per run) and the server's CPU time.
- ``probe``: signal handlers loaded into bench workers; they time the drain from inside.
- ``noop`` / ``bare_app``: the no-op tasks (untracked, tracked) for the template's app and a bare
  ``Celery()`` app.
- ``publisher``: a producer process (``python -m tests.bench.publisher``): publish rates.
- ``producer``: a producer process on a database: enqueue latency, the outbox relay, fills.
- ``workers``: the worker command lines (taken from ``bin/``) and their processes.
- ``exports``: an export process (``python -m tests.bench.exports``): a bare COPY and the exports
  family's writers over the probe table, and export_run's peak memory.
- ``measure``: one publish, latency, relay or drain measurement.
- ``scenarios``: THE list of scenarios; a new one is an entry there.
- ``report``: the table and the JSON file.

Environment: ``BENCH_N`` (published messages, 20000), ``BENCH_DRAIN_N`` (drained messages,
10000), ``BENCH_REPEAT`` (runs per drain scenario, median taken, 3), ``BENCH_LOGLEVEL`` (worker
log level for every scenario, WARNING: at INFO each job logs two lines, which costs any worker
about a third of its no-op throughput and would hide the rest), ``BENCH_ONLY`` (comma-separated
substrings of scenario keys to run; all when unset), ``BENCH_LATENCY_N`` (timed enqueues per
latency scenario, 2000), ``BENCH_RELAY_N`` (pending outbox rows relayed, 10000),
``BENCH_DB_DRAIN_N`` (messages per untracked drain on PostgreSQL, 5000), ``BENCH_TRACKED_N``
(messages per tracked drain, 5000: they drain two to three times slower), ``BENCH_EXPORT_ROWS``
(rows of the probe table the export scenarios write, 1000000).
"""
