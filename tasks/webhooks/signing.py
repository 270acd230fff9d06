"""Signatures as Standard Webhooks defines them: plain functions, no database, no Django.

A secret is ``whsec_`` + base64 of 24 to 64 random bytes. The signed content is
``{msg_id}.{timestamp}.{body}``; the header carries ``v1,<base64 HMAC-SHA256>`` for each secret,
space-separated, so that during a key rotation a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix, not a secret)
SECRET_BYTES = (24, 64)  # the specification's bounds


class SecretError(ValueError):
    """A secret that is not ``whsec_`` + base64 of 24 to 64 bytes."""


def secret_generate() -> str:
    """A new secret: 32 random bytes, the size the specification suggests."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode("ascii")


def _secret_key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"a secret starts with {SECRET_PREFIX!r}: {secret[:10]!r}...")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"a secret is {SECRET_PREFIX} followed by base64") from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise SecretError(f"a secret holds {low} to {high} bytes, this one {len(key)}")
    return key


def secrets_parse(secrets: str | Sequence[str]) -> list[str]:
    """The secrets of an endpoint, newest first: a space-separated string or a list.

    Each is checked (SecretError): a typo found when the endpoint is saved, not by a receiver
    whose every signature check fails."""
    items = secrets.split() if isinstance(secrets, str) else [s.strip() for s in secrets]
    items = [s for s in items if s]
    if not items:
        raise SecretError("an endpoint needs at least one secret")
    for item in items:
        _secret_key(item)
    return items


def webhook_sign(*, msg_id: str, timestamp: int, body: bytes, secrets: str | Sequence[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per secret, newest first."""
    content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    signatures = [
        base64.b64encode(hmac.new(_secret_key(s), content, hashlib.sha256).digest()).decode()
        for s in secrets_parse(secrets)
    ]
    return " ".join(f"v1,{signature}" for signature in signatures)
