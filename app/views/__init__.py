"""HTTP views: the health check, the jobs page, and the jobs API router (``app/views/api.py``).

``config/urls.py`` maps them; ``app/views/jobs.py`` holds the rule of who sees which job.
"""

from app.views.health import healthz
from app.views.pages import jobs_page

__all__ = ["healthz", "jobs_page"]
