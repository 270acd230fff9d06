from django.apps import AppConfig


class ExampleConfig(AppConfig):
    name = "tasks.example"
    label = "example"  # table names start with example_, and `migrate example zero` removes them
    verbose_name = "Example jobs"
