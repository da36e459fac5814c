"""Projects, their members, notebooks with immutable versions, and versioned datasets.

Every stored file (a notebook version, a dataset file) is content-addressed: the bytes live once
in storage under their sha256 (apps.core.hashing), and rows point at them.
"""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from .selectors import ProjectQuerySet


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    PRIVATE = "private", "Private"


class Role(models.TextChoices):
    # Ordered from most to least powerful; `Role.rank` compares them.
    OWNER = "owner", "Owner"
    MAINTAINER = "maintainer", "Maintainer"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.MAINTAINER: 2, Role.OWNER: 3}

# SPDX identifiers are letters, digits, '.', '-' and '+' (LicenseRef- for custom ones).
spdx_validator = RegexValidator(r"^[A-Za-z0-9.+-]+$", "Use an SPDX license identifier such as MIT or CC-BY-4.0.")


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    license = models.CharField(max_length=64, blank=True, validators=[spdx_validator])
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE)
    # Blank for what the site makes itself (a course's grading notebooks and data), or once its
    # creator is deleted.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The default environment of its runs (PUT /api/v1/projects/{slug}/environment/); None: the
    # node's base environment.
    environment = models.ForeignKey(
        "environments.Declaration", on_delete=models.PROTECT, null=True, blank=True, related_name="projects"
    )

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_public(self) -> bool:
        return self.visibility == Visibility.PUBLIC


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=12, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "user_id"]
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="unique_project_member")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.project_id}:{self.role}"


class Notebook(models.Model):
    """A notebook at a path in a project. Its content lives in immutable NotebookVersions."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="notebooks")
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Denormalised pointer to the newest version so lists need no per-row subquery.
    latest_version = models.ForeignKey(
        "NotebookVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["project", "path"], name="unique_notebook_path")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.path}"

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class NotebookVersion(models.Model):
    """One immutable upload of a notebook, numbered 1, 2, … per notebook."""

    notebook = models.ForeignKey(Notebook, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=300)
    # papermill's view of the `parameters` cell: [{name, inferred_type_name, default, help}]
    parameters = models.JSONField(default=list, blank=True)
    kernel_name = models.CharField(max_length=100, blank=True)
    language = models.CharField(max_length=50, blank=True)
    message = models.CharField(max_length=500, blank=True)
    # Declared beside this version; wins over the project's default.
    environment = models.ForeignKey(
        "environments.Declaration",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="notebook_versions",
    )
    # Blank for what the site makes itself (a course's grading notebooks and data), or once its
    # creator is deleted.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["notebook_id", "-number"]
        constraints = [models.UniqueConstraint(fields=["notebook", "number"], name="unique_notebook_version")]

    def __str__(self) -> str:
        return f"{self.notebook_id}@v{self.number}"


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    # Blank for what the site makes itself (a course's grading notebooks and data), or once its
    # creator is deleted.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    latest_version = models.ForeignKey(
        "DatasetVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_dataset_name")]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.name}"


class DatasetVersion(models.Model):
    """An immutable set of files. A new upload copies the previous version's file list and
    adds or replaces the uploaded paths, like a commit."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    message = models.CharField(max_length=500, blank=True)
    file_count = models.PositiveIntegerField(default=0)
    total_size = models.PositiveBigIntegerField(default=0)
    # Blank for what the site makes itself (a course's grading notebooks and data), or once its
    # creator is deleted.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset_id", "-number"]
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="unique_dataset_version")]

    def __str__(self) -> str:
        return f"{self.dataset_id}@v{self.number}"


class DatasetFile(models.Model):
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=300)

    class Meta:
        ordering = ["version_id", "path"]
        constraints = [models.UniqueConstraint(fields=["version", "path"], name="unique_dataset_file_path")]

    def __str__(self) -> str:
        return self.path
