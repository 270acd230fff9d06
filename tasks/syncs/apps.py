from django.apps import AppConfig


class SyncsConfig(AppConfig):
    name = "tasks.syncs"
    label = "syncs"  # tables syncs_*; `migrate syncs zero` removes them
    verbose_name = "API syncs"
