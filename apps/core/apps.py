from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from django.urls import register_converter

        from .converters import BoundedIntConverter

        # Before any URLconf is imported: every app's routes use `<id:…>` for numbers.
        register_converter(BoundedIntConverter, "id")
