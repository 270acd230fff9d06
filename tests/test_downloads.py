"""Download links (app/downloads.py) through the real view and Django's default storage: the
owner gets the exact bytes, streamed; a changed, expired or someone else's link is refused with
its own status; generated and mutated tokens never serve a file and never get a 500."""

from __future__ import annotations

import logging
import os
import posixpath
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.shortcuts import resolve_url
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings

from app.downloads import (
    DownloadLinkInvalid,
    download_expiry_default,
    download_link,
    download_token_check,
)

pytestmark = [pytest.mark.usefixtures("development_http", "media"), pytest.mark.django_db]

VISITORS = ("anonymous", "alice", "bob", "root")  # root: a superuser, who gets no pass


@pytest.fixture
def clients() -> dict[str, Client]:
    """A client per visitor; a view's exception comes back as the 500 a browser would get."""
    clients = {}
    for who in VISITORS:
        client = Client(raise_request_exception=False)
        if who != "anonymous":
            user = User.objects.create_user(who, is_staff=who == "root", is_superuser=who == "root")
            client.force_login(user)
        clients[who] = client
    return clients


def user_id(who: str) -> int:
    return User.objects.get(username=who).pk


def stored(name: str, data: bytes = b"id,total\n1,9.50\n") -> str:
    return default_storage.save(name, ContentFile(data))


def later(seconds: float = 3600) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def token_of(link: str) -> str:
    return urlsplit(link).path.split("/")[-2]


def fetch(client: Client, link: str) -> Any:
    """GET ``link`` (absolute, or a path), its body read: the test client then closes the file."""
    response: Any = client.get(urlsplit(link).path)
    if response.streaming:
        response.body = b"".join(response.streaming_content)
    return response


def fetch_token(client: Client, token: str) -> Any:
    """GET the link of a raw token, percent-encoded as a browser sends it (any bytes)."""
    return fetch(client, "/downloads/" + quote(token.encode(errors="surrogatepass"), safe="") + "/")


def served(response: Any) -> bool:
    return bool(response.status_code == 200 and response.streaming)


# --- what each visitor gets ---------------------------------------------------------------------


def test_the_owner_gets_the_exact_bytes_streamed_in_blocks(
    clients: dict[str, Client], settings: Settings
) -> None:
    settings.SITE_URL = "https://files.example.com"
    data = os.urandom(3 * 1024 * 1024)
    name = stored("exports/2026/Rapport été.csv", data)
    link = download_link(name=name, owner_id=user_id("alice"), expires_at=later())
    assert link.startswith("https://files.example.com/downloads/")
    # Only characters that no mail client or browser escapes or cuts a link at.
    assert re.fullmatch(r"/downloads/[A-Za-z0-9_.:-]+/", urlsplit(link).path)

    response: Any = clients["alice"].get(urlsplit(link).path)
    assert response.status_code == 200
    assert response.streaming
    blocks = list(response.streaming_content)
    assert b"".join(blocks) == data
    assert max(map(len, blocks)) < len(data) // 100  # read in blocks, never whole
    assert response["Content-Length"] == str(len(data))
    assert response["Content-Type"] == "text/csv"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert disposition.endswith("filename*=utf-8''" + quote(posixpath.basename(name)))
    assert "no-store" in response["Cache-Control"]


def test_a_link_without_an_owner_opens_for_anyone(clients: dict[str, Client]) -> None:
    link = download_link(name=stored("exports/open.csv"), owner_id=None, expires_at=later())
    for who in VISITORS:
        response = fetch(clients[who], link)
        assert served(response), who
        assert response.body == b"id,total\n1,9.50\n"


def test_someone_elses_link_is_403_even_for_a_superuser(clients: dict[str, Client]) -> None:
    link = download_link(
        name=stored("exports/a.csv"), owner_id=user_id("alice"), expires_at=later()
    )
    for who in ("bob", "root"):
        response = fetch(clients[who], link)
        assert response.status_code == 403, who
        assert b"another account" in response.content


def test_an_anonymous_visitor_logs_in_and_comes_back_to_the_link(
    clients: dict[str, Client],
) -> None:
    link = download_link(
        name=stored("exports/a.csv"), owner_id=user_id("alice"), expires_at=later()
    )
    response = fetch(clients["anonymous"], link)
    assert response.status_code == 302
    login = urlsplit(response.url)
    assert login.path == resolve_url("admin:login")  # LOGIN_URL
    (next_url,) = parse_qs(login.query)["next"]
    assert next_url == urlsplit(link).path
    assert served(fetch(clients["alice"], next_url))


def test_a_changed_signature_or_payload_is_a_404(clients: dict[str, Client]) -> None:
    alice = user_id("alice")
    mine = token_of(download_link(name=stored("a.csv"), owner_id=alice, expires_at=later()))
    theirs = token_of(download_link(name=stored("b.csv"), owner_id=None, expires_at=later()))
    payload, signature = mine.rsplit(":", 1)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    # The same payload signed for another use (Django's default salt) is no download link.
    other_use = signing.Signer().sign(payload)
    for token in (f"{payload}:{flipped}", f"{theirs.split(':')[0]}:{signature}", other_use, ""):
        response = fetch_token(clients["alice"], token)
        assert response.status_code == 404, token
        assert not response.streaming


def test_an_expired_link_is_410_for_anyone_without_a_login(clients: dict[str, Client]) -> None:
    past = timezone.now() - timedelta(seconds=1)
    link = download_link(name=stored("exports/a.csv"), owner_id=user_id("alice"), expires_at=past)
    for who in ("anonymous", "alice"):
        response = fetch(clients[who], link)
        assert response.status_code == 410, who
        assert response["Content-Type"].startswith("text/plain")
        assert b"expired" in response.content


def test_a_file_pruned_from_storage_is_a_404(clients: dict[str, Client]) -> None:
    name = stored("exports/a.csv")
    link = download_link(name=name, owner_id=None, expires_at=later())
    default_storage.delete(name)
    response = fetch(clients["alice"], link)
    assert response.status_code == 404
    assert b"no longer available" in response.content


def test_a_name_outside_the_storage_is_a_404_not_a_file(clients: dict[str, Client]) -> None:
    link = download_link(name="../../../../etc/passwd", owner_id=None, expires_at=later())
    assert fetch(clients["alice"], link).status_code == 404


def test_the_default_expiry_follows_download_link_max_age(
    clients: dict[str, Client], settings: Settings
) -> None:
    name = stored("exports/a.csv")
    settings.DOWNLOAD_LINK_MAX_AGE = 3600
    fresh = download_link(name=name, owner_id=None, expires_at=download_expiry_default())
    assert served(fetch(clients["alice"], fresh))
    settings.DOWNLOAD_LINK_MAX_AGE = 0
    expired = download_link(name=name, owner_id=None, expires_at=download_expiry_default())
    assert fetch(clients["alice"], expired).status_code == 410


def test_a_naive_expiry_is_refused_when_the_link_is_made() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        download_link(name="a.csv", owner_id=None, expires_at=datetime.now() + timedelta(days=1))


def test_links_keep_working_across_a_secret_key_rotation(
    clients: dict[str, Client], settings: Settings
) -> None:
    settings.SECRET_KEY = "old-" + "k" * 50
    link = download_link(name=stored("exports/a.csv"), owner_id=None, expires_at=later())
    settings.SECRET_KEY = "new-" + "k" * 50
    settings.SECRET_KEY_FALLBACKS = ["old-" + "k" * 50]
    assert served(fetch(clients["anonymous"], link))
    settings.SECRET_KEY_FALLBACKS = []  # the old key retired: its links with it
    assert fetch(clients["anonymous"], link).status_code == 404


def test_refusals_are_logged_with_their_reason_never_the_token(
    clients: dict[str, Client], caplog: pytest.LogCaptureFixture
) -> None:
    alice = user_id("alice")
    name = stored("exports/a.csv")
    past = datetime(2020, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    expired = download_link(name=name, owner_id=None, expires_at=past)
    someone_elses = download_link(name=name, owner_id=alice, expires_at=later())
    pruned = download_link(name="exports/gone.csv", owner_id=None, expires_at=later())
    genuine = token_of(someone_elses)
    tampered = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    caplog.set_level(logging.INFO)
    for link in (expired, someone_elses, pruned):
        fetch(clients["bob"], link)
    fetch_token(clients["bob"], tampered)
    fetch(clients["anonymous"], someone_elses)
    for token in map(token_of, (expired, someone_elses, pruned)):
        assert token not in caplog.text
    assert tampered not in caplog.text
    reasons = [r.getMessage() for r in caplog.records if r.name == "app.views.downloads"]
    assert reasons == [
        f"download refused (410): link to {name!r} expired at 2020-01-02T03:04:05+00:00",
        f"download refused (403): link to {name!r} of user {alice} opened by user {user_id('bob')}",
        "download refused (404): 'exports/gone.csv' is not in the storage (FileNotFoundError)",
        "download refused (404): bad signature",
        f"download needs a login: link to {name!r} of user {alice} opened by an anonymous visitor",
    ]


# --- generated tokens ---------------------------------------------------------------------------

GENERATED = hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: Text as a client may send it: any characters, bytes that are not UTF-8, token-like shapes.
TOKENS = (
    st.text()
    | st.binary().map(lambda b: b.decode("utf-8", errors="surrogateescape"))
    | st.from_regex(r"\.?[A-Za-z0-9_\-]{0,80}:[A-Za-z0-9_\-]{0,50}", fullmatch=True)
    | st.sampled_from(["\ud800:x", "\x00:\x00", ":", "::"])  # a lone surrogate, NULs
)


@GENERATED
@given(token=TOKENS, who=st.sampled_from(VISITORS))
def test_a_generated_token_never_serves_and_never_errs(
    clients: dict[str, Client], token: str, who: str
) -> None:
    response = fetch_token(clients[who], token)
    assert response.status_code < 500, response.content[:500]
    assert not served(response)


#: An edit of a token: what, where (taken modulo its length) and with which text.
EDITS = st.tuples(
    st.sampled_from(["replace", "insert", "delete", "cut", "grow"]),
    st.integers(0, 10**6),
    st.sampled_from(list("AZaz09-_:.=%/")) | st.text(min_size=1, max_size=8),
)


def mutated(token: str, edit: tuple[str, int, str]) -> str:
    """``token`` with a character replaced, inserted or removed, cut short, or grown."""
    kind, where, text = edit
    where %= len(token) + 1
    if kind == "replace":
        return token[:where] + text + token[where + 1 :]
    if kind == "insert":
        return token[:where] + text + token[where:]
    if kind == "delete":
        return token[:where] + token[where + 1 :]
    if kind == "cut":
        return token[:where]
    return token + text


@pytest.fixture
def open_token() -> str:
    """A valid token of a stored file, for anyone, for an hour."""
    return token_of(download_link(name=stored("exports/a.csv"), owner_id=None, expires_at=later()))


@GENERATED
@given(edit=EDITS)
def test_a_mutated_token_never_serves(
    clients: dict[str, Client], open_token: str, edit: tuple[str, int, str]
) -> None:
    token = mutated(open_token, edit)
    response = fetch_token(clients["alice"], token)
    assert response.status_code < 500, response.content[:500]
    assert served(response) == (token == open_token)  # a "replace" by the same character


@pytest.mark.parametrize("seconds", [-86400, -1, 60, 86400])
@pytest.mark.parametrize("who", VISITORS)
@pytest.mark.parametrize("owner", [None, "alice"])
def test_only_an_unexpired_link_of_the_visitor_serves(
    clients: dict[str, Client], owner: str | None, who: str, seconds: int
) -> None:
    owner_id = user_id(owner) if owner else None
    link = download_link(name=stored("exports/a.csv"), owner_id=owner_id, expires_at=later(seconds))
    response = fetch(clients[who], link)
    assert response.status_code < 500
    assert served(response) == (seconds > 0 and owner in (None, who))


@given(token=TOKENS)
@hypothesis_settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_download_token_check_refuses_any_text_with_one_exception(token: str) -> None:
    with pytest.raises(DownloadLinkInvalid):
        download_token_check(token=token, user_id=None)
