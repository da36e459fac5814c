"""Declared environments: what a project or a notebook version declares (requirements.txt,
pyproject.toml, uv.lock), resolved once by the site into a lock of exact versions and hashes.

A lock is immutable and addressed by the sha256 of its text, the very file a node installs from:
two declarations that resolve to the same packages share one lock, and a node builds one virtual
environment per lock. A declaration (the uploaded file) belongs to the project or version that
uploaded it and is never shared: a lock holds nothing of any declaration but what it resolved to,
so projects whose declarations resolve alike learn nothing of each other's files.
"""

from django.db import models


class DeclarationKind(models.TextChoices):
    REQUIREMENTS = "requirements", "requirements.txt"
    PYPROJECT = "pyproject", "pyproject.toml"
    UV_LOCK = "uv.lock", "uv.lock"


class EnvironmentLock(models.Model):
    sha256 = models.CharField(max_length=64, unique=True)
    # The lock file: a pinned requirements file with hashes (uv pip compile), headed by comments
    # that make its identity whole (Python, platform, layered).
    lock = models.TextField()
    # [{"name", "version", "marker"?}] in the lock's order (by name).
    packages = models.JSONField(default=list)
    requires_python = models.CharField(max_length=200, blank=True)
    python_version = models.CharField(max_length=16)  # the oldest Python it was resolved for, e.g. "3.11"
    platform = models.CharField(max_length=64)
    # A virtual environment over the node's base packages (Colab's preinstalled stack), not a
    # closed one: its runs depend on the node's base too.
    layered = models.BooleanField(default=False)
    resolver = models.CharField(max_length=100)  # "uv 0.9.5"
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"environment {self.sha256[:12]}"

    @property
    def short(self) -> str:
        return self.sha256[:12]

    def as_claim(self) -> dict[str, object]:
        """What a node needs to build it (apps.compute.agent_views puts it in the claim)."""
        return {
            "sha256": self.sha256,
            "lock": self.lock,
            "layered": self.layered,
            "python_version": self.python_version,
            "requires_python": self.requires_python,
            "packages": len(self.packages),
        }


class Declaration(models.Model):
    """One upload of a declaration (a project's default, or beside a notebook version), with the
    lock it resolved to then. A fresh resolve makes a new one from the same text."""

    lock = models.ForeignKey(EnvironmentLock, on_delete=models.PROTECT, related_name="declarations")
    kind = models.CharField(max_length=16, choices=DeclarationKind.choices)
    name = models.CharField(max_length=255)  # the uploaded file's base name
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} -> {self.lock}"
