"""The email family's settings: set them in config/settings.py to change them; these are the
defaults. The SMTP server, credentials and EMAIL_TIMEOUT are Django's own EMAIL_* settings."""

from __future__ import annotations

from django.conf import settings

#: Recipients per bulk batch job: each batch is sent over one SMTP connection.
BATCH_SIZE: int = getattr(settings, "EMAIL_BATCH_SIZE", 100)
#: Messages per second across every worker together (0: no limit). Providers cap it: SES starts
#: at 14/s, many SMTP relays at a few per second.
SEND_RATE: float = getattr(settings, "EMAIL_SEND_RATE", 10.0)
#: The biggest attachment accepted, in bytes (providers refuse more than 10 to 40 MB per message).
MAX_ATTACHMENT_BYTES: int = getattr(settings, "EMAIL_MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024)
#: The most recipients of one bulk send.
MAX_BULK_RECIPIENTS: int = getattr(settings, "EMAIL_MAX_BULK_RECIPIENTS", 100_000)
#: Days a bulk send's recipients (addresses: personal data) are kept after it ended.
RETENTION_DAYS: int = getattr(settings, "EMAIL_RETENTION_DAYS", settings.JOBS_RETENTION_DAYS)
