"""Production settings refuse to start without a secret and pass `check --deploy`; the demo
account exists only in the embedded mode."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.accounts.models import User
from apps.projects.models import NotebookVersion, Project
from tests.environments.conftest import package_index_url  # noqa: F401 - a real index without the demo's packages

ROOT = Path(__file__).resolve().parents[1]
STRONG_KEY = "x7Qp2vR9sT4wY6zA8bC1dE3fG5hJ7kL9mN2pQ4rS6tU8vW0xY2zA4bC6dE8fG0hJ"


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: no DJANGO_* variables and none of the service URLs the suite sets.
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_refuses_to_start_without_secret_key():
    result = _manage("check", DJANGO_SETTINGS_MODULE="config.settings.production")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def _check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    return _manage(
        "check", "--deploy", "--fail-level", "WARNING", DJANGO_SETTINGS_MODULE="config.settings.production", **env
    )


def test_production_settings_pass_check_deploy():
    result = _check_deploy(DJANGO_SECRET_KEY=STRONG_KEY, DJANGO_ALLOWED_HOSTS="reprolab.example.org")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_reads_secret_key_from_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(STRONG_KEY)
    result = _check_deploy(DJANGO_SECRET_KEY_FILE=str(secret))
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_create_the_demo_account():
    result = _manage("seed_demo", DJANGO_SETTINGS_MODULE="config.settings.production", DJANGO_SECRET_KEY=STRONG_KEY)
    assert result.returncode != 0
    assert "only for the embedded mode" in result.stderr


def test_local_settings_default_to_embedded_services():
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], s.CELERY_TASK_ALWAYS_EAGER)"
    )
    result = _manage("shell", "-c", code, DJANGO_SETTINGS_MODULE="config.settings.local")
    assert result.stdout.strip().splitlines()[-1].split() == [
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
        "True",
    ]


def test_service_urls_switch_to_postgres_and_redis():
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], s.CELERY_BROKER_URL)"
    )
    result = _manage(
        "shell",
        "-c",
        code,
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DATABASE_URL="postgres://u@db.example:5432/reprolab",
        REDIS_URL="redis://cache.example:6379/0",
    )
    assert result.stdout.strip().splitlines()[-1].split() == [
        "django.db.backends.postgresql",
        "apps.core.channel_layers.RedisChannelLayer",  # channels_redis's, with a waiting pool
        "redis://cache.example:6379/0",
    ]


@pytest.mark.django_db
def test_seed_demo_is_idempotent(settings, package_index_url, tmp_path):  # noqa: F811
    # The local index has neither NumPy nor Matplotlib: the demo's declared environment cannot be
    # resolved (as offline), so its notebook comes without it, and says why when it runs.
    settings.REPROLAB_PACKAGE_INDEX_URL = package_index_url
    settings.REPROLAB_UV_CACHE_DIR = tmp_path / "uv"
    call_command("seed_demo")
    call_command("seed_demo")
    demo = User.objects.get(username="demo")
    assert demo.check_password("demo")
    project = Project.objects.get(slug="demo")
    assert project.is_public
    assert NotebookVersion.objects.filter(notebook__project=project).count() == 2
    plot = NotebookVersion.objects.get(notebook__project=project, notebook__path="analysis/plot-fit.ipynb")
    assert plot.environment is None
    version = NotebookVersion.objects.get(notebook__project=project, notebook__path="analysis/linear-fit.ipynb")
    assert [p["name"] for p in version.parameters] == ["samples", "noise", "seed", "data_path"]
    assert project.datasets.get().versions.count() == 1


@pytest.mark.django_db
def test_seed_demo_refuses_when_not_embedded(settings):
    settings.REPROLAB_DEMO_ALLOWED = False
    with pytest.raises(CommandError, match="embedded mode"):
        call_command("seed_demo")
    assert not User.objects.filter(username="demo").exists()
