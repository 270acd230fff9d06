"""``python -m tests.bench.smtp MODE N`` (DATABASE_URL set): N emails through a local SMTP
server that requires STARTTLS and AUTH, as every provider does; prints RESULT {"seconds"}.

- ``per-message``: ``email_deliver`` N times, what N ``tasks.email.send`` jobs do: each opens
  its own connection (TCP, STARTTLS, AUTH) and claims its send.
- ``bulk``: ``batch_send`` over N recipients, what the bulk path's batch jobs do: one connection,
  one claim and one result write per recipient. The send-rate limit is off in both.

The server runs in its own process, so it does not share this one's interpreter lock.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "
CREDENTIALS = ("bench", "bench-password")


def serve(ready: Event, stop: Event, info: Any, tls_dir: str) -> None:
    django_setup()  # tests.smtp imports tests.support, which imports the models
    from tests.smtp import smtp_sink

    with smtp_sink(tls_dir=Path(tls_dir), credentials=CREDENTIALS) as sink:
        info.put(sink.env())
        ready.set()
        stop.wait()
        info.put(len(sink.messages))


def main(mode: str, n: int) -> None:
    context = multiprocessing.get_context("spawn")
    ready, stop, info = context.Event(), context.Event(), context.Queue()
    with tempfile.TemporaryDirectory() as tls_dir:
        server = context.Process(target=serve, args=(ready, stop, info, tls_dir))
        server.start()
        if not ready.wait(30):
            raise SystemExit("the SMTP server did not start")
        os.environ.update(info.get())
        seconds = run(mode, n)
        stop.set()
        received = info.get(timeout=30)
        server.join(10)
    if received != n:
        raise SystemExit(f"the server received {received} messages, not {n}")
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "n": n}), flush=True)


def django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def run(mode: str, n: int) -> float:
    django_setup()
    from tasks.email import conf
    from tasks.email.bulk import batch_send
    from tasks.email.models import Bulk, BulkRecipient
    from tasks.email.services import email_deliver

    conf.SEND_RATE = 0
    context = {"title": "Your weekly digest", "body": "Three things happened.\n" * 20}
    addresses = [f"user{i}@example.com" for i in range(n)]
    if mode == "per-message":
        specs = [
            {"template": "notice", "to": [address], "context": context} for address in addresses
        ]
        started = time.perf_counter()
        for spec in specs:
            email_deliver(job_id=str(uuid.uuid4()), spec=spec)
        return time.perf_counter() - started
    if mode == "bulk":
        bulk = Bulk.objects.create(template="notice", context=context, batches=1)
        BulkRecipient.objects.bulk_create(
            BulkRecipient(bulk=bulk, address=address, batch=0) for address in addresses
        )
        started = time.perf_counter()
        counts = batch_send(bulk_id=str(bulk.id), batch=0, final_attempt=True)
        seconds = time.perf_counter() - started
        if counts["sent"] != n:
            raise SystemExit(f"bulk sent {counts}, not {n}")
        return seconds
    raise SystemExit(f"unknown mode {mode!r}: per-message or bulk")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
