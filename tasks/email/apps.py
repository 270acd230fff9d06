from django.apps import AppConfig


class EmailConfig(AppConfig):
    name = "tasks.email"
    label = "email"  # tables email_*; `migrate email zero` removes them
    verbose_name = "Email"
