from django.apps import AppConfig


class ReproducibilityConfig(AppConfig):
    name = "apps.reproducibility"
    label = "reproducibility"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the run_finished receiver
