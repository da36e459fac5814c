from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .confusables import username_keys


class ReproLabUserManager(UserManager["User"]):
    def confusable_with(self, username: str) -> "models.QuerySet[User]":
        """Users whose name looks like `username` (TR39 skeleton, with and without case):
        two index lookups, however many users there are."""
        plain, folded = username_keys(username)
        return self.filter(models.Q(skeleton_sha256=plain) | models.Q(folded_skeleton_sha256=folded))


class User(AbstractUser):
    """The site's user. A project-owned model from the start so fields can be added later."""

    # Derived from the username (see confusables.py) and kept in step by save(): a new name is
    # compared with every existing one through these indexes, not by scanning the users.
    skeleton_sha256 = models.CharField(max_length=64, editable=False, db_index=True, default="")
    folded_skeleton_sha256 = models.CharField(max_length=64, editable=False, db_index=True, default="")

    objects: ClassVar[ReproLabUserManager] = ReproLabUserManager()

    def clean(self) -> None:
        super().clean()  # NFKC-normalises the username
        if not self.username:
            return  # a form whose username failed its own validation: nothing to compare
        if username_keys(self.username) == (self.skeleton_sha256, self.folded_skeleton_sha256):
            return  # unchanged name: a pair that predates the check must not block other edits
        if User.objects.confusable_with(self.username).exclude(pk=self.pk).exists():
            raise ValidationError(
                {"username": f"“{self.username}” looks too much like an existing username. Please choose another."},
                code="confusable",
            )

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Here rather than in a service: users are also made by the admin, createsuperuser and
        # Django's forms, and a stale skeleton would let a look-alike name through.
        self.skeleton_sha256, self.folded_skeleton_sha256 = username_keys(self.username or "")
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "username" in update_fields:
            kwargs["update_fields"] = {*update_fields, "skeleton_sha256", "folded_skeleton_sha256"}
        super().save(*args, **kwargs)


# Prefixed so that secret scanners (GitHub, GitLab) can recognise a leaked token.
TOKEN_PREFIX = "rlp_"  # noqa: S105 - a prefix, not a secret
# Personal tokens always expire, as GitHub's fine-grained tokens do: a leaked one stops working
# by itself. The tokens page offers these lifetimes; the API accepts any date within the maximum.
PERSONAL_TOKEN_DEFAULT_DAYS = 30
PERSONAL_TOKEN_MAX_DAYS = 366
PERSONAL_TOKEN_LIFETIMES = [(7, "7 days"), (30, "30 days"), (90, "90 days"), (PERSONAL_TOKEN_MAX_DAYS, "1 year")]


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> "ApiTokenQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )

    def inactive(self) -> "ApiTokenQuerySet":
        return self.filter(models.Q(revoked_at__isnull=False) | models.Q(expires_at__lte=timezone.now()))


class ApiToken(models.Model):
    """A personal API token. Only its sha256 is stored; the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, shown in listings so a user can tell tokens apart.
    display_prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"
