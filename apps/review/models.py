"""Publications (immutable, citable notebook versions) and their peer review.

A `Publication` groups the versions of one notebook that were put forward; each
`PublicationVersion` pins a notebook version, the run whose output it shows, and the citable
metadata. Its content never changes once created (`save` refuses it); only its review state
moves: in review -> published / revision requested / rejected (or published at once when the
authors skip review). A `Review` is one reviewer's invitation, report and recommendation;
`ReviewComment`s anchor to a cell of a version (its id plus the sha256 of its source) so a
later version can tell when the anchored text changed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class ReviewMode(models.TextChoices):
    OPEN = "open", "Open (everyone sees who reviewed)"
    SINGLE_BLIND = "single_blind", "Single-blind (authors never see reviewer identities)"


class VersionStatus(models.TextChoices):
    IN_REVIEW = "in_review", "In review"
    REVISION_REQUESTED = "revision_requested", "Revision requested"
    PUBLISHED = "published", "Published"
    REJECTED = "rejected", "Rejected"


class Recommendation(models.TextChoices):
    ACCEPT = "accept", "Accept"
    MINOR_REVISION = "minor_revision", "Minor revision"
    MAJOR_REVISION = "major_revision", "Major revision"
    REJECT = "reject", "Reject"


class Publication(models.Model):
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="publications")
    notebook = models.ForeignKey("projects.Notebook", on_delete=models.PROTECT, related_name="publications")
    review_mode = models.CharField(max_length=12, choices=ReviewMode.choices, default=ReviewMode.OPEN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"publication {self.pk}"


class ImmutableVersion(Exception):
    """A publication version's content cannot change: publish a new version instead."""


class PublicationVersion(models.Model):
    # Fields that may change after creation: the review outcome. Everything else is the record.
    MUTABLE_FIELDS = frozenset({"status", "published_at", "decision", "decision_note", "decided_by", "decided_at"})

    publication = models.ForeignKey(Publication, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    notebook_version = models.ForeignKey("projects.NotebookVersion", on_delete=models.PROTECT, related_name="+")
    run = models.ForeignKey("compute.Run", on_delete=models.PROTECT, related_name="publication_versions")
    title = models.CharField(max_length=300)
    abstract = models.TextField(max_length=10_000, blank=True)
    keywords = models.JSONField(default=list, blank=True)
    license = models.CharField(max_length=64)
    # [{"given_names", "family_names", "orcid", "affiliation"}], in citation order
    authors = models.JSONField(default=list)
    datasets = models.ManyToManyField("projects.DatasetVersion", blank=True, related_name="publication_versions")
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.IN_REVIEW)
    published_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=20, choices=Recommendation.choices, blank=True)
    decision_note = models.TextField(max_length=20_000, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["publication_id", "number"]
        constraints = [models.UniqueConstraint(fields=["publication", "number"], name="unique_publication_version")]

    def __str__(self) -> str:
        return f"publication {self.publication_id} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:
            # A new object is always an INSERT: one built with an existing row's pk must not
            # overwrite that version.
            if self.pk is not None and type(self).objects.filter(pk=self.pk).exists():
                raise ImmutableVersion("A publication version cannot be replaced; publish a new version.")
            kwargs["force_insert"] = True
        else:
            fields = kwargs.get("update_fields")
            if fields is None or not set(fields) <= self.MUTABLE_FIELDS:
                raise ImmutableVersion("A publication version cannot be edited; publish a new version.")
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return f"/pub/{self.publication_id}/v{self.number}"

    @property
    def is_published(self) -> bool:
        return self.status == VersionStatus.PUBLISHED


class ReviewState(models.TextChoices):
    INVITED = "invited", "Invited"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"
    SUBMITTED = "submitted", "Submitted"


class Review(models.Model):
    publication = models.ForeignKey(Publication, on_delete=models.CASCADE, related_name="reviews")
    # Numbered per publication: "Reviewer 2" is who authors see in single-blind mode.
    number = models.PositiveSmallIntegerField()
    # None while an invitation sent to an e-mail address without an account waits to be taken:
    # whoever opens its link (the token, stored hashed) signed in takes it.
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="reviews"
    )
    invited_email = models.EmailField(blank=True)
    invitation_token_hash = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    invitation_sent_at = models.DateTimeField(null=True, blank=True)  # empty: the sweep sends it
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    state = models.CharField(max_length=10, choices=ReviewState.choices, default=ReviewState.INVITED)
    recommendation = models.CharField(max_length=20, choices=Recommendation.choices, blank=True)
    summary = models.TextField(max_length=50_000, blank=True)
    # The version the reviewer reviewed when submitting (reviews span versions until then).
    submitted_version = models.ForeignKey(
        PublicationVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reproductions = models.ManyToManyField("reproducibility.Reproduction", blank=True, related_name="reviews")
    # Earlier rounds, oldest first, when the reviewer was invited again for a revised version:
    # [{"version", "recommendation", "summary", "submitted_at"}]. Nothing submitted is lost.
    rounds = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["publication_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["publication", "reviewer"], name="one_review_per_reviewer"),
            models.UniqueConstraint(fields=["publication", "number"], name="unique_review_number"),
            models.UniqueConstraint(
                fields=["publication", "invited_email"],
                condition=models.Q(reviewer__isnull=True),
                name="one_open_invitation_per_address",
            ),
            models.CheckConstraint(
                condition=models.Q(reviewer__isnull=False) | ~models.Q(invited_email=""),
                name="review_has_reviewer_or_address",
            ),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} of publication {self.publication_id}"

    @property
    def alias(self) -> str:
        return f"Reviewer {self.number}"


class ReviewComment(models.Model):
    """A comment on a cell of a publication version, or a reply in its thread (replies carry
    no anchor of their own: they live in their root's thread)."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="comments")
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="replies")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    version = models.ForeignKey(PublicationVersion, on_delete=models.CASCADE, related_name="comments")
    cell_id = models.CharField(max_length=100, blank=True)
    cell_source_sha256 = models.CharField(max_length=64, blank=True)
    line_start = models.PositiveIntegerField(null=True, blank=True)
    line_end = models.PositiveIntegerField(null=True, blank=True)
    output_index = models.PositiveIntegerField(null=True, blank=True)
    body = models.TextField(max_length=20_000)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment {self.pk} on {self.cell_id or 'the notebook'}"


class Notification(models.Model):
    """An in-site notice; the same text goes out by e-mail through Celery."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=40)
    message = models.CharField(max_length=500)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at"], name="notification_unread_idx")]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}"
