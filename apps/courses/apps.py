from django.apps import AppConfig


class CoursesConfig(AppConfig):
    name = "apps.courses"
    label = "courses"
    verbose_name = "Courses"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the run_finished receiver
