from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "tasks.notifications"
    label = "notifications"  # tables notifications_*; `migrate notifications zero` removes them
    verbose_name = "Notifications"
