from django.contrib import admin
from django.urls import path

from app import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("jobs/", views.jobs_page, name="jobs"),
    # <str:...>, not <uuid:...>: a malformed id gets a clear JSON 404, not Django's HTML page.
    path("api/jobs/", views.job_list, name="api-job-list"),
    path("api/jobs/<str:job_id>/", views.job_detail, name="api-job"),
    path("api/jobs/<str:job_id>/cancel/", views.job_cancel, name="api-job-cancel"),
    path("api/demo/", views.demo_enqueue, name="api-demo"),
    path("admin/", admin.site.urls),
]
