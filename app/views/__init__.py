"""HTTP views: the health check, the jobs API, the jobs page and the demo endpoint.

``config/urls.py`` maps them; ``app/views/jobs.py`` holds the rule of who sees which job.
"""

from app.views.api import demo_enqueue, job_cancel, job_detail, job_list
from app.views.health import healthz
from app.views.pages import jobs_page

__all__ = ["demo_enqueue", "healthz", "job_cancel", "job_detail", "job_list", "jobs_page"]
