from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "tasks.webhooks"
    label = "webhooks"  # tables webhooks_*; `migrate webhooks zero` removes them
    verbose_name = "Webhooks"
