"""Create the demo account and project of the embedded mode. Idempotent: a second run keeps
what is there (identical uploads create no new versions)."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.accounts.models import User
from apps.projects import services
from apps.projects.models import Dataset, Project, Visibility

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 - the embedded demo only; refused under production settings
DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Load the demo user (demo/demo) and a public demo project. Embedded mode only."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REPROLAB_DEMO_ALLOWED:
            raise CommandError("The demo account is only for the embedded mode (config.settings.local); refusing.")
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=DEMO_USERNAME, defaults={"email": "demo@example.org"})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            project = Project.objects.filter(slug=DEMO_SLUG).first()
            if project is None:
                project = services.project_create(
                    creator=user,
                    name="Demo: linear fit",
                    slug=DEMO_SLUG,
                    description="A parameterized notebook and a small dataset, to try ReproLab.",
                    license="CC-BY-4.0",
                    visibility=Visibility.PUBLIC,
                )
        with (DEMO_DIR / "linear-fit.ipynb").open("rb") as notebook:
            services.notebook_upload(
                project=project,
                path="analysis/linear-fit.ipynb",
                content=notebook,
                uploader=user,
                message="Demo notebook",
            )
        dataset = Dataset.objects.filter(project=project, name="measurements").first() or services.dataset_create(
            project=project, name="measurements", description="50 noisy points on y = 2x + 1.", creator=user
        )
        with (DEMO_DIR / "measurements.csv").open("rb") as data:
            services.dataset_add_files(
                dataset=dataset, files=[services.IncomingFile(path="measurements.csv", content=data)], uploader=user
            )
        self.stdout.write(
            self.style.SUCCESS(f"Demo ready: log in as {DEMO_USERNAME}/{DEMO_PASSWORD}, project '{DEMO_SLUG}'.")
        )
