from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class ExportsConfig(AppConfig):
    name = "tasks.exports"
    label = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        """Import every installed app's ``exports.py`` (as the admin does ``admin.py``), where
        apps declare their exports: the web app and the workers then know the same ones."""
        autodiscover_modules("exports")
