from django.apps import AppConfig


class ReproducibilityConfig(AppConfig):
    name = "apps.reproducibility"
    label = "reproducibility"
