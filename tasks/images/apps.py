from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "tasks.images"
    label = "images"
    verbose_name = "Images"
