"""Settings of the email tests' worker processes: the project's, with the send rate from the
environment (the family reads EMAIL_SEND_RATE through django.conf.settings)."""

import os

from config.settings import *  # noqa: F403

EMAIL_SEND_RATE = float(os.environ.get("TEST_EMAIL_SEND_RATE", "0"))
