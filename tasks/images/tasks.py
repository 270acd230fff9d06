"""Image jobs: thin entry points that call ``services.py``; ``tasks.images.*`` runs on the
``images`` queue (config/queues.py), served by the CPU worker (bin/worker-cpu)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from tasks.images.services import image_process


@shared_task(bind=True, tracked=True)
def process(self: Task, source: str) -> dict[str, dict[str, Any]]:
    """Every variant of ``source`` (a name in default storage). A bad file (ImageInvalid, a
    PermanentError) is dead-lettered at once with what is wrong; a storage connection
    error or timeout is retried with backoff, as the base job retries them."""
    return image_process(source=source, job_id=str(self.request.id))
