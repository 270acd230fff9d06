"""Settings of the syncs tests' worker processes: the project's, with the remote's URL and rate
from the environment (the family reads SYNCS_REMOTES and SYNCS_RATES through
django.conf.settings)."""

import json
import os

from config.settings import *  # noqa: F403

SYNCS_REMOTES = json.loads(os.environ.get("TEST_SYNCS_REMOTES", "{}"))
SYNCS_RATES = json.loads(os.environ.get("TEST_SYNCS_RATES", "{}"))
OUTGOING_ALLOWED_NETWORKS = ["127.0.0.1/32"]
