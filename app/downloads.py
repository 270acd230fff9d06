"""Signed, expiring download links to files in Django's default storage.

A job that writes a file for someone (an export, an image) sends them a link, not the file.
Nothing is stored to honour the link: its token carries the storage name, the owner's id and
the expiry, signed with ``django.core.signing`` (HMAC-SHA256 of ``SECRET_KEY`` with a salt of this
use only), so a changed byte makes it worthless, and links made before ``SECRET_KEY`` is rotated
keep working while the old key is in ``SECRET_KEY_FALLBACKS``:

    url = download_link(name=name, owner_id=user.pk, expires_at=download_expiry_default())

``GET /downloads/<token>/`` (``app/views/downloads.py``) checks the token with
``download_token_check`` and streams the file. Who may open a link:

- ``owner_id=None``: anyone who has it; the link itself is the credential;
- otherwise that user only, logged in. Staff and superusers do not bypass it: a link is sent to
  one person, and a forwarded or leaked one must not open for an admin either (the admin has
  the storage itself).

The token is signed, not encrypted: whoever holds the link can read the name and the owner id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

#: Tokens signed for another use (sessions, password resets) never pass as a download link.
SALT = "app.downloads.link"


class DownloadRefused(Exception):
    """A token that must not serve its file; the message says why, never the token."""


class DownloadLinkInvalid(DownloadRefused):
    """Not a token this site signed: garbage, changed, or signed with a key no longer held."""


class DownloadLinkExpired(DownloadRefused):
    """A genuine link past its expiry."""


class DownloadWrongOwner(DownloadRefused):
    """A genuine link of one user opened by another, or by an anonymous visitor."""


def download_expiry_default() -> datetime:
    """Now plus ``DOWNLOAD_LINK_MAX_AGE`` seconds: the ``expires_at`` of an ordinary link."""
    return timezone.now() + timedelta(seconds=settings.DOWNLOAD_LINK_MAX_AGE)


def download_link(*, name: str, owner_id: int | None, expires_at: datetime) -> str:
    """An absolute URL (``SITE_URL``) that streams ``name`` from default storage to ``owner_id``
    (anyone who has it if None) until ``expires_at``, which must be timezone-aware: a naive one
    would be read in the server's local zone, and the link would expire hours early or late."""
    if not name or name.endswith("/"):
        raise ValueError(f"{name!r} is not a file name in the storage")
    if timezone.is_naive(expires_at):
        raise ValueError("expires_at must be timezone-aware (django.utils.timezone.now() is)")
    # A list, not a dict: the shortest JSON, hence the shortest link. Seconds, rounded down: a
    # link never opens after its expiry.
    payload = [name, owner_id, int(expires_at.timestamp())]
    token = signing.Signer(salt=SALT).sign_object(payload, compress=True)
    return settings.SITE_URL + reverse("download", kwargs={"token": token})


def download_token_check(*, token: str, user_id: int | None) -> str:
    """The storage name of ``token`` if it may be served now to ``user_id`` (None: anonymous).

    Raises DownloadLinkInvalid, then DownloadLinkExpired, then DownloadWrongOwner, in that order:
    an expired link says so to anyone, without a login first.
    """
    try:
        name, owner_id, expires = signing.Signer(salt=SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, TypeError):
        # BadSignature: anything we did not sign. ValueError: text no URL carries (a lone
        # surrogate is a UnicodeError) or a payload of another shape, as TypeError is.
        raise DownloadLinkInvalid("bad signature") from None
    if timezone.now().timestamp() >= expires:
        expired_at = datetime.fromtimestamp(expires, tz=UTC).isoformat()
        raise DownloadLinkExpired(f"link to {name!r} expired at {expired_at}")
    if owner_id is not None and owner_id != user_id:
        who = "an anonymous visitor" if user_id is None else f"user {user_id}"
        raise DownloadWrongOwner(f"link to {name!r} of user {owner_id} opened by {who}")
    return str(name)
