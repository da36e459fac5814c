"""Create the demo account and project of the embedded mode. Idempotent: a second run keeps
what is there (identical uploads create no new versions)."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.exceptions import APIException

from apps.accounts.models import User
from apps.environments.services import declare
from apps.projects import services
from apps.projects.models import Dataset, Notebook, Project, Visibility

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
        self.upload_declared(project, user)
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

    def upload_declared(self, project: Project, user: User) -> None:
        """A notebook with its environment declared beside it (NumPy and Matplotlib, which the
        local node's base environment lacks). Resolving needs the package index: offline, the
        notebook is uploaded without it and says so when it runs."""
        path = "analysis/plot-fit.ipynb"
        notebook = Notebook.objects.filter(project=project, path=path).select_related("latest_version").first()
        if notebook is not None and notebook.latest_version and notebook.latest_version.environment_id:
            return  # resolved on an earlier start: no new lock (and no index lookup) each time
        declaration = DEMO_DIR / "requirements.txt"
        try:
            environment = declare(declaration.name, declaration.read_bytes())
        except (ValidationError, APIException) as error:
            self.stderr.write(f"The demo's declared environment could not be resolved (offline?): {error}")
            environment = None
        with (DEMO_DIR / "plot-fit.ipynb").open("rb") as content:
            services.notebook_upload(
                project=project,
                path=path,
                content=content,
                uploader=user,
                message="Demo notebook with a declared environment",
                environment=environment,
            )
