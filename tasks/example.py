"""An example job: the shape every task here follows.

The task is a thin entry point; the logic is a plain, typed, keyword-only function that tests can
call without a broker. ``tasks.example.*`` has no route of its own, so it runs on ``default``.
"""

from __future__ import annotations

import logging

from celery import shared_task

from app.errors import PermanentError

logger = logging.getLogger(__name__)


def greeting_build(*, name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise PermanentError(f"name must be 1 to 100 characters, got {len(name)}")
    return f"Hello, {name}!"


@shared_task
def say_hello(name: str) -> str:
    greeting = greeting_build(name=name)
    logger.info("said %s", greeting)
    return greeting
