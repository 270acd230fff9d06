"""Settings of the log tests' web process: the project's, plus one URL that enqueues a test job
(tests/logs/urls.py), so a real request with its X-Request-ID starts the jobs whose lines the
tests read."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "tests.logs.urls"
