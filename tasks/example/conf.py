"""The example family's settings: set them in config/settings.py (or the environment there) to
change them; these are the defaults."""

from __future__ import annotations

from django.conf import settings

#: The demo runs on the threads pool, which enforces no time limit: keep any demo short.
DEMO_MAX_SECONDS: float = getattr(settings, "EXAMPLE_DEMO_MAX_SECONDS", 60)
