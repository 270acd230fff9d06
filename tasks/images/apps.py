from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "tasks.images"
    label = "images"
    verbose_name = "Images"

    def ready(self) -> None:
        from tasks.images import checks  # noqa: F401  (registers the settings check)
