"""Signatures verify with the Standard Webhooks reference library, during key rotation too, for
any body and secret; malformed secrets are refused when an endpoint is saved."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tasks.webhooks.signing import SecretError, secret_generate, secrets_parse, webhook_sign


def headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_a_signature_verifies_with_the_reference_library() -> None:
    secret = secret_generate()
    body = b'{"type":"invoice.paid","data":{"id":7,"name":"Zo\xc3\xab"}}'
    now = int(time.time())
    signature = webhook_sign(msg_id="msg_1", timestamp=now, body=body, secrets=secret)
    assert Webhook(secret).verify(body, headers("msg_1", now, signature))["data"]["id"] == 7
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers("msg_1", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_generate()).verify(body, headers("msg_1", now, signature))


def test_during_rotation_either_secret_verifies() -> None:
    new, old = secret_generate(), secret_generate()
    now = int(time.time())
    signature = webhook_sign(msg_id="msg_2", timestamp=now, body=b"{}", secrets=f"{new} {old}")
    assert len(signature.split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(b"{}", headers("msg_2", now, signature))
    # A list works as well as a space-separated string, in the same order.
    assert webhook_sign(msg_id="msg_2", timestamp=now, body=b"{}", secrets=[new, old]) == signature


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ("", "at least one secret"),
        ("abc", "starts with 'whsec_'"),
        ("whsec_not-base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes, this one 5"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "this one 65"),
    ],
)
def test_malformed_secrets_are_refused_with_the_reason(secrets: str, message: str) -> None:
    with pytest.raises(SecretError, match=message):
        secrets_parse(secrets)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode),
    keys=st.lists(st.binary(min_size=24, max_size=64), min_size=1, max_size=3),
    msg_id=st.text(alphabet=st.characters(codec="ascii", exclude_characters=" "), min_size=1,
                   max_size=40),
    age=st.integers(min_value=-240, max_value=240),
)  # fmt: skip
def test_any_body_and_secrets_verify_with_the_reference_library(
    body: bytes, keys: list[bytes], msg_id: str, age: int
) -> None:
    """The reference library reads the body as UTF-8 text; other bytes are not JSON anyway."""
    try:
        body.decode()
    except UnicodeDecodeError:
        body = body.decode("latin-1").encode()
    secrets = ["whsec_" + base64.b64encode(key).decode() for key in keys]
    timestamp = int(time.time()) + age
    signature = webhook_sign(msg_id=msg_id, timestamp=timestamp, body=body, secrets=secrets)
    for secret in secrets:
        Webhook(secret).verify(body, headers(msg_id, timestamp, signature), json_parse=False)
    assert secrets_parse(" ".join(secrets)) == secrets
