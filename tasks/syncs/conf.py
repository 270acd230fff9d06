"""The syncs family's settings: set them in config/settings.py (or the environment there) to
change them; these are the defaults. Read at each use, so a changed setting applies at once."""

from __future__ import annotations

from django.conf import settings


def remotes() -> dict[str, str]:
    """``SYNCS_REMOTES``: sync name -> the URL of its first page, replacing the URL the sync
    declares (e.g. a staging API). Every URL goes through the URL guard at every request."""
    return dict(getattr(settings, "SYNCS_REMOTES", {}))


def rates() -> dict[str, float]:
    """``SYNCS_RATES``: sync name -> requests per second, replacing the declared budget. The
    budget is per remote host, shared by every worker: syncs of one host share the lowest."""
    return {name: float(rate) for name, rate in getattr(settings, "SYNCS_RATES", {}).items()}


def rate_jitter() -> float:
    """``SYNCS_RATE_JITTER``: seconds by which a request may reach the remote later than its
    slot (scheduling, a busy machine, the network). The limiter spaces requests by
    ``(1 + jitter) / rate`` so that the remote never counts more than ``rate`` in any one-second
    window even then: 0.25 costs a fifth of the budget; 0 spends it all, and a window may see one
    request more."""
    return float(getattr(settings, "SYNCS_RATE_JITTER", 0.25))


def timeout() -> float:
    """``SYNCS_TIMEOUT``: seconds to wait for each read of an answer (and to send)."""
    return float(getattr(settings, "SYNCS_TIMEOUT", 30.0))


def connect_timeout() -> float:
    """``SYNCS_CONNECT_TIMEOUT``: seconds to open a connection."""
    return float(getattr(settings, "SYNCS_CONNECT_TIMEOUT", 5.0))


def max_retries() -> int:
    """``SYNCS_MAX_RETRIES``: retries of a page after a timeout, a 5xx or a 429, with the base
    job's backoff (1, 2, 4 ... s up to 10 min) or the server's Retry-After."""
    return int(getattr(settings, "SYNCS_MAX_RETRIES", 10))


def retry_after_max() -> float:
    """``SYNCS_RETRY_AFTER_MAX``: the longest Retry-After honoured, in seconds (longer is cut)."""
    return float(getattr(settings, "SYNCS_RETRY_AFTER_MAX", 600))


def lease_seconds() -> float:
    """``SYNCS_LEASE_SECONDS``: how long a run holds its sync without writing a page; after
    that (a worker that died and whose message is gone), another run may take it over."""
    return float(getattr(settings, "SYNCS_LEASE_SECONDS", 600))


def max_page_bytes() -> int:
    """``SYNCS_MAX_PAGE_BYTES``: the largest page read; a longer answer fails the page."""
    return int(getattr(settings, "SYNCS_MAX_PAGE_BYTES", 20_000_000))


MAX_RETRIES: int = max_retries()  # the tasks' decorator needs it at import
