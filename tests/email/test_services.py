"""Building and sending one email, in this process, against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.errors import PermanentError, TransientError
from app.models import EffectClaim
from tasks.email.services import EmailInvalid, email_build, email_deliver, email_send
from tests.smtp import SmtpSink

CONTEXT = {"title": "Your export is ready", "body": "Rows: 3\nEnjoy.", "link": "https://x.test/d"}


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "template": "notice",
        "to": ["ann@example.com"],
        "context": CONTEXT,
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "attachments": [],
        "from_email": None,
    }
    return {**base, **overrides}


@pytest.mark.django_db(transaction=True)
def test_a_templated_email_with_an_attachment_arrives_intact(sink: SmtpSink, media: Path) -> None:
    (media / "exports").mkdir()
    csv = "id,name\n1,Zoë\n2,=1+1\n".encode() * 300
    picture = bytes(range(256)) * 40
    (media / "exports" / "report.csv").write_bytes(csv)
    (media / "logo.png").write_bytes(picture)
    result = email_deliver(
        job_id="3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        spec=spec(
            to=["Ann <ann@example.com>"],
            cc=["cat@example.com"],
            bcc=["bob@example.com"],
            reply_to=["help@example.com"],
            attachments=["exports/report.csv", "logo.png"],
            from_email="Shop <shop@example.com>",
        ),
    )
    assert result["sent"] is True
    [received] = sink.messages
    assert sorted(received.rcpt_tos) == ["ann@example.com", "bob@example.com", "cat@example.com"]
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "Your export is ready"
    assert message["From"] == "Shop <shop@example.com>"
    assert message["To"] == "Ann <ann@example.com>"
    assert message["Cc"] == "cat@example.com"
    assert message["Reply-To"] == "help@example.com"
    assert message["Bcc"] is None  # in the envelope only
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    text = plain.get_content().replace("\r\n", "\n")
    html = rich.get_content().replace("\r\n", "\n")
    assert "Rows: 3\nEnjoy." in text and "https://x.test/d" in text
    assert "<h1" in html and "Rows: 3<br>Enjoy." in html and "max-width:560px" in html  # layout
    report, logo = message.iter_attachments()
    assert (report.get_filename(), report.get_content_type()) == ("report.csv", "text/csv")
    assert report.get_payload(decode=True) == csv
    assert (logo.get_filename(), logo.get_content_type()) == ("logo.png", "image/png")
    assert logo.get_payload(decode=True) == picture


@pytest.mark.django_db(transaction=True)
def test_a_job_that_handed_its_message_over_never_sends_it_again(sink: SmtpSink) -> None:
    """The claim is taken before the final line; a run that finds it (the first died, or lost
    the connection, after that) fails as 'outcome unknown' instead of sending a second copy."""
    job_id = "3f2504e0-4f89-11d3-9a0c-0305e82c3302"
    assert email_deliver(job_id=job_id, spec=spec())["sent"] is True
    with pytest.raises(PermanentError, match="outcome unknown"):
        email_deliver(job_id=job_id, spec=spec())
    assert len(sink.messages) == 1


@pytest.mark.django_db(transaction=True)
def test_no_answer_after_the_final_line_is_not_resent(sink: SmtpSink, settings: Any) -> None:
    """The server took the message but its answer never came (a timeout): the retry must not
    send a second copy. Failed before the claim moved to the final line."""
    settings.EMAIL_TIMEOUT = 1
    sink.on_message = lambda count: time.sleep(2) if count == 1 else None
    job_id = "3f2504e0-4f89-11d3-9a0c-0305e82c3307"
    with pytest.raises(PermanentError, match=r"outcome unknown.*timed out"):
        email_deliver(job_id=job_id, spec=spec())
    with pytest.raises(PermanentError, match="outcome unknown"):
        email_deliver(job_id=job_id, spec=spec())
    assert sink.deliveries() == {"ann@example.com": 1}


@pytest.mark.django_db(transaction=True)
def test_a_refused_sender_is_permanent(sink: SmtpSink) -> None:
    sink.refuse_sender = True
    with pytest.raises(PermanentError, match="refused: 553"):
        email_deliver(job_id="3f2504e0-4f89-11d3-9a0c-0305e82c3308", spec=spec())
    assert not EffectClaim.objects.exists() and sink.messages == []


@pytest.mark.django_db(transaction=True)
def test_recipients_refused_among_accepted_ones_are_in_the_result(sink: SmtpSink) -> None:
    sink.reject.add("cat@example.com")
    result = email_deliver(
        job_id="3f2504e0-4f89-11d3-9a0c-0305e82c3309",
        spec=spec(to=["ann@example.com"], cc=["cat@example.com"]),
    )
    assert result["sent"] is True
    assert list(result["refused"]) == ["cat@example.com"]
    assert result["refused"]["cat@example.com"].startswith("550 5.1.1")
    assert sink.deliveries() == {"ann@example.com": 1}


@pytest.mark.django_db(transaction=True)
def test_a_deferred_recipient_is_transient_and_its_retry_sends(sink: SmtpSink) -> None:
    sink.defer_once.add("ann@example.com")
    job_id = "3f2504e0-4f89-11d3-9a0c-0305e82c3303"
    with pytest.raises(TransientError, match="451"):
        email_deliver(job_id=job_id, spec=spec())
    assert not EffectClaim.objects.exists()  # released: the server did not take it
    assert email_deliver(job_id=job_id, spec=spec())["sent"] is True
    assert sink.deliveries() == {"ann@example.com": 1}


@pytest.mark.django_db(transaction=True)
def test_a_rejected_recipient_is_permanent(sink: SmtpSink) -> None:
    sink.reject.add("ann@example.com")
    with pytest.raises(PermanentError, match=r"550 5\.1\.1"):
        email_deliver(job_id="3f2504e0-4f89-11d3-9a0c-0305e82c3304", spec=spec())
    assert sink.messages == []


@pytest.mark.django_db(transaction=True)
def test_no_server_is_transient(settings: Any) -> None:
    from tests.support import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    with pytest.raises(TransientError, match="ConnectionRefusedError"):
        email_deliver(job_id="3f2504e0-4f89-11d3-9a0c-0305e82c3305", spec=spec())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"context": {**CONTEXT, "title": "Hi\nBcc: all@example.com"}}, "subject .* line break"),
        ({"context": {**CONTEXT, "title": "Hi\r\nX: y"}}, "subject .* line break"),
        ({"to": ["ann@example.com\nBcc: all@example.com"]}, "line break or control"),
        ({"reply_to": ["a@example.com\r\n"]}, "line break or control"),
        ({"to": ["not-an-address"]}, "not a valid email address"),
        ({"to": ["x@example.com, y@example.com"]}, "not one address but 2"),
        ({"to": ["a@example.com <evil@example.com>"]}, "not one address"),
        ({"attachments": [""]}, "not a file name"),
        ({"to": []}, "at least one"),
        ({"attachments": ["../../etc/passwd"]}, "outside the storage"),
        ({"attachments": ["/etc/passwd"]}, "outside the storage"),
        ({"attachments": ["missing.pdf"]}, "does not exist"),
        ({"template": "../../config/settings"}, "a name, not a path"),
        ({"template": "no_such_template"}, "no template"),
    ],
)
def test_bad_input_is_refused_before_anything_is_enqueued_or_sent(
    sink: SmtpSink, media: Path, overrides: dict[str, Any], error: str
) -> None:
    from app.models import OutboxMessage

    with pytest.raises(EmailInvalid, match=error):
        email_send(**spec(**overrides))
    with pytest.raises(PermanentError, match=error):  # a job built from it fails, never retries
        email_deliver(job_id="3f2504e0-4f89-11d3-9a0c-0305e82c3306", spec=spec(**overrides))
    assert sink.messages == []
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_attachment_over_the_limit_is_refused(
    sink: SmtpSink, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.email import conf

    monkeypatch.setattr(conf, "MAX_ATTACHMENT_BYTES", 100)
    (media / "big.bin").write_bytes(b"x" * 101)
    with pytest.raises(EmailInvalid, match="101 bytes, more than 100"):
        email_send(**spec(attachments=["big.bin"]))


header_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=header_text, to=st.one_of(st.emails(), header_text), name=header_text)
def test_generated_input_is_built_safely_or_refused(title: str, to: str, name: str) -> None:
    """Whatever the caller passes, email_build raises EmailInvalid or builds a message whose
    headers are exactly the ones it set: no injected header, no crash."""
    try:
        message = email_build(
            template="notice",
            to=[to, f"{name} <ann@example.com>"],
            context={**CONTEXT, "title": title},
        )
        raw = message.message().as_bytes()
    except EmailInvalid:
        return
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    names = sorted(key.lower() for key in parsed)
    assert names == sorted(
        ["content-type", "mime-version", "subject", "from", "to", "date", "message-id"]
    )
    assert str(parsed["Subject"]).strip() == title.strip()  # folding may lead with a space
    assert len(parsed["To"].addresses) == 2


@pytest.mark.django_db(transaction=True)
def test_ended_bulk_sends_are_pruned_with_their_recipients() -> None:
    from datetime import timedelta

    from django.utils import timezone

    from tasks.email.bulk import bulks_prune
    from tasks.email.models import Bulk, BulkRecipient

    now = timezone.now()
    old = Bulk.objects.create(template="notice", ended_at=now - timedelta(days=40))
    running = Bulk.objects.create(template="notice")
    recent = Bulk.objects.create(template="notice", ended_at=now - timedelta(days=1))
    for bulk in (old, running, recent):
        BulkRecipient.objects.create(bulk=bulk, address="ann@example.com", batch=0)
    assert bulks_prune(before=now - timedelta(days=30)) == 1
    assert set(Bulk.objects.values_list("id", flat=True)) == {running.id, recent.id}
    assert BulkRecipient.objects.count() == 2


addresses = st.one_of(
    st.emails(),
    st.builds(lambda e: e.upper(), st.emails()),
    st.text(max_size=30),
    st.sampled_from(["ann@example.com", "ANN@example.com", "bob@example.com\r\n", ""]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    recipients=st.one_of(
        st.lists(st.emails(), min_size=1, max_size=12), st.lists(addresses, max_size=12)
    )
)
@example(recipients=["ann@example.com", "ANN@example.com", " bob@example.com "])
@pytest.mark.django_db(transaction=True)
def test_generated_recipient_lists_start_one_bulk_or_nothing(
    broker: Any, recipients: list[str]
) -> None:
    """Whatever list a caller passes: EmailInvalid and nothing written, or one bulk send with
    each distinct address once (case-insensitively), in batches of BATCH_SIZE."""
    from app.models import JobRecord
    from tasks.email import conf
    from tasks.email.bulk import bulk_start
    from tasks.email.models import Bulk, BulkRecipient

    Bulk.objects.all().delete()
    JobRecord.objects.all().delete()
    try:
        with transaction.atomic():
            job_id = bulk_start(template="notice", recipients=recipients, context=CONTEXT)
    except EmailInvalid:
        assert not Bulk.objects.exists() and not JobRecord.objects.exists()
        return
    bulk = Bulk.objects.get()
    stored = list(BulkRecipient.objects.filter(bulk=bulk).values_list("address", flat=True))
    assert str(bulk.id) == job_id and JobRecord.objects.filter(id=job_id).exists()
    assert len({a.lower() for a in stored}) == len(stored)
    assert {a.lower() for a in stored} == {r.strip().lower() for r in recipients}
    assert bulk.batches == -(-len(stored) // conf.BATCH_SIZE)


@pytest.mark.django_db(transaction=True)
def test_text_parts_are_not_html_escaped_and_the_html_part_is(sink: SmtpSink) -> None:
    """Found by the property test above: autoescaping turned "Ann's" into "Ann&#x27;s" in
    subjects and text bodies."""
    context = {"title": "Ann's <export>", "body": "a < b & c", "link": ""}
    message = email_build(template="notice", to=["ann@example.com"], context=context)
    assert message.subject == "Ann's <export>"
    assert "a < b & c" in str(message.body)
    html = str(message.alternatives[0][0])
    assert "Ann&#x27;s &lt;export&gt;" in html and "a &lt; b &amp; c" in html
