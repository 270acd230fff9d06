"""The URL map: the engine's pages, the JSON API with every family's router, the admin."""

from importlib import import_module

from django.contrib import admin
from django.urls import path

from app import views
from app.api import api_create
from app.views.api import router as jobs_router
from config import families

api = api_create(
    title="Jobs API",
    description='Jobs and what the task families under tasks/ offer. Errors: {"error": ...}.',
    urls_namespace="api",
)
api.add_router("/jobs/", jobs_router)
for name, module in families.api_modules().items():  # tasks/<name>/api.py -> /api/<name>/
    api.add_router(f"/{name}/", import_module(module).router)

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),  # app/views/metrics.py: METRICS_TOKEN
    path("jobs/", views.jobs_page, name="jobs"),
    path("downloads/<str:token>/", views.download, name="download"),  # app/downloads.py
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
