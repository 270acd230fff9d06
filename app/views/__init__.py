"""HTTP views: the health check, the metrics, the jobs page, download links, and the jobs API
router (``app/views/api.py``).

``config/urls.py`` maps them; ``app/views/jobs.py`` holds the rule of who sees which job.
"""

from app.views.downloads import download
from app.views.health import healthz
from app.views.metrics import metrics
from app.views.pages import jobs_page

__all__ = ["download", "healthz", "jobs_page", "metrics"]
