"""``python -m tests.bench.sync MODE N`` (DATABASE_URL set): N pages of 100 contacts from a local
JSON API that takes 20 ms per request, into an empty table; prints RESULT {"seconds"}.

- ``sync``: ``sync_run``, what a ``tasks.syncs.run`` job does: the process's pooled client
  (keep-alive), each page upserted in one transaction with its checkpoint;
- ``naive``: a new connection per request (``httpx.get``), then ``update_or_create`` record by
  record, each in its own transaction.
The rate limit is off in both. The server runs in its own process, so it does not share this
one's interpreter lock.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from multiprocessing.synchronize import Event
from typing import Any

RESULT_PREFIX = "RESULT "
LATENCY = 0.020
PER_PAGE = 100


def serve(ready: Event, stop: Event, info: Any, pages: int) -> None:
    from tests.syncs.remote import RemoteApi, remote_api

    with remote_api(RemoteApi(pages=pages, per_page=PER_PAGE, latency=LATENCY)) as api:
        info.put(api.url)
        ready.set()
        stop.wait()
        info.put(len(api.hits))


def main(mode: str, n: int) -> None:
    context = multiprocessing.get_context("spawn")
    ready, stop, info = context.Event(), context.Event(), context.Queue()
    server = context.Process(target=serve, args=(ready, stop, info, n))
    server.start()
    if not ready.wait(30):
        raise SystemExit("the API server did not start")
    url = info.get()
    seconds = run(mode, n, url)
    stop.set()
    requests = info.get(timeout=30)
    server.join(10)
    if requests != n:
        raise SystemExit(f"the server answered {requests} requests, not {n}")
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "n": n}), flush=True)


def run(mode: str, n: int, url: str) -> float:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["OUTGOING_ALLOWED_NETWORKS"] = "127.0.0.1/32"
    django.setup()
    import httpx
    from django.conf import settings

    from tasks.syncs.models import Contact
    from tasks.syncs.registry import SYNCS, contact_map
    from tasks.syncs.services import sync_run

    settings.SYNCS_REMOTES = {"contacts": url}
    settings.SYNCS_RATES = {"contacts": 0}
    per_page = str(SYNCS["contacts"].pagination.params(1).get("per_page", PER_PAGE))
    started = time.perf_counter()
    if mode == "sync":
        result = sync_run(name="contacts", job_id="bench")
        if result["pages"] != n:
            raise SystemExit(f"sync stored {result}, not {n} pages")
    elif mode == "naive":
        for page in range(1, n + 1):
            body = httpx.get(url, params={"page": page, "per_page": per_page}, timeout=10).json()
            for record in body["data"]:
                fields = contact_map(record)
                Contact.objects.update_or_create(
                    external_id=fields.pop("external_id"), defaults=fields
                )
    else:
        raise SystemExit(f"unknown mode {mode!r}: sync or naive")
    seconds = time.perf_counter() - started
    if Contact.objects.count() != n * PER_PAGE:
        raise SystemExit(f"{Contact.objects.count()} contacts stored, not {n * PER_PAGE}")
    return seconds


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
