"""API shapes. Reviewer identities go through `access.reviewer_name`, never straight from the
model: in single-blind mode authors see "Reviewer N" everywhere."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.compute.serializers import RequirementsField
from apps.core.inputs import MAX_ID, MAX_NUMBER

from . import access
from .anchors import AnchorCell
from .models import PublicationVersion, Recommendation, Review, ReviewComment, ReviewMode


class AuthorSerializer(serializers.Serializer):
    given_names = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    family_names = serializers.CharField(max_length=200)
    orcid = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    affiliation = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class VersionWriteSerializer(serializers.Serializer):
    run = serializers.IntegerField(
        min_value=1,
        max_value=MAX_ID,
        required=False,
        allow_null=True,
        default=None,
        help_text="The succeeded run whose result to publish (its notebook version is the one published).",
    )
    notebook_version = serializers.IntegerField(
        min_value=1,
        max_value=MAX_ID,
        required=False,
        allow_null=True,
        default=None,
        help_text="Id of the notebook version to publish, instead of `run` (its latest succeeded run is shown).",
    )
    title = serializers.CharField(max_length=300)
    authors = AuthorSerializer(many=True, allow_empty=False)
    abstract = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")
    keywords = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list, max_length=20
    )
    license = serializers.CharField(max_length=64, help_text="SPDX id, e.g. CC-BY-4.0 (required).")
    datasets = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, default=list, max_length=100
    )
    submit_for_review = serializers.BooleanField(
        default=True, help_text="False publishes at once; true keeps it unpublished until an editor accepts it."
    )


class PublicationCreateSerializer(VersionWriteSerializer):
    project = serializers.SlugField()
    review_mode = serializers.ChoiceField(choices=ReviewMode.choices, default=ReviewMode.OPEN)


class VersionSerializer(serializers.ModelSerializer[PublicationVersion]):
    url = serializers.SerializerMethodField()
    notebook_version = serializers.IntegerField(source="notebook_version.number", read_only=True)
    notebook_sha256 = serializers.CharField(source="notebook_version.sha256", read_only=True)
    datasets = serializers.SerializerMethodField()
    citation = serializers.SerializerMethodField()

    class Meta:
        model = PublicationVersion
        fields = [
            "number",
            "url",
            "status",
            "title",
            "authors",
            "abstract",
            "keywords",
            "license",
            "notebook_version",
            "notebook_sha256",
            "run",
            "datasets",
            "published_at",
            "decision",
            "decision_note",
            "decided_at",
            "created_at",
            "citation",
        ]

    def get_url(self, version: PublicationVersion) -> str:
        return self._absolute(version.get_absolute_url())

    def get_datasets(self, version: PublicationVersion) -> list[str]:
        return [f"{d.dataset.name}@v{d.number}" for d in version.datasets.all()]

    def get_citation(self, version: PublicationVersion) -> dict[str, str]:
        base = version.get_absolute_url()
        return {
            "bibtex": self._absolute(f"{base}/cite.bib"),
            "cff": self._absolute(f"{base}/CITATION.cff"),
            "apa": self._absolute(f"{base}/cite.txt"),
            "datacite": self._absolute(f"{base}/datacite.json"),
        }

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class PublicationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.slug")
    notebook = serializers.CharField(source="notebook.path")
    review_mode = serializers.CharField()
    created_at = serializers.DateTimeField()
    versions = serializers.SerializerMethodField()

    @extend_schema_field(VersionSerializer(many=True))
    def get_versions(self, publication: Any) -> list[dict[str, Any]]:
        versions = access.visible_versions(self.context["request"].user, publication)
        return list(VersionSerializer(versions, many=True, context=self.context).data)


class InviteSerializer(serializers.Serializer):
    reviewer = serializers.CharField(max_length=254, help_text="Username or e-mail address.")


class DecisionSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=Recommendation.choices)
    note = serializers.CharField(max_length=20_000, required=False, allow_blank=True, default="")


class SubmitSerializer(serializers.Serializer):
    recommendation = serializers.ChoiceField(choices=Recommendation.choices)
    summary = serializers.CharField(max_length=50_000)


class RerunSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=MAX_NUMBER, required=False, allow_null=True, default=None)
    rtol = serializers.FloatField(min_value=0, default=1e-9)
    atol = serializers.FloatField(min_value=0, default=0.0)
    repeats = serializers.IntegerField(min_value=1, max_value=10, default=1)
    requirements = RequirementsField(required=False, default=None, help_text="Absent: what the original run needed.")


def reproduction_evidence(reproduction: Any) -> dict[str, Any]:
    """The verdict and what supports it, without who ran it or where (the rerun's node and
    creator would name a single-blind reviewer)."""
    report = reproduction.report or {}
    return {
        "id": reproduction.pk,
        "verdict": reproduction.verdict,
        "rtol": reproduction.rtol,
        "atol": reproduction.atol,
        "repeats": reproduction.repeats,
        "created_at": reproduction.created_at,
        "finished_at": reproduction.finished_at,
        "cells": report.get("cells", []),
        "values": report.get("values", []),
        "artifacts": report.get("artifacts", []),
        "reason": report.get("reason", ""),
        "environment_changes": _environment_changes(report.get("environment")),
    }


# What the authors of a single-blind review get of a rerun: the verdict and, per cell and value,
# the status beside their own code and output. Nothing the reviewer's machine wrote (its output,
# error text, paths, OS and CPU) passes: any of it can name the reviewer, and redacting a name
# out of text would itself answer "is it X?" when X appears in the authors' own code.
BLIND_WITHHELD = "Single-blind review: the rerun's own output and where it ran are shown to the editors only."
BLIND_ARRAY_FIELDS = ("status", "elements", "unequal", "mismatched", "max_abs_diff", "max_rel_diff", "where")


def blind_evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    changes = evidence.get("environment_changes") or {}
    return {
        **{key: evidence[key] for key in ("id", "verdict", "rtol", "atol", "repeats", "created_at", "finished_at")},
        "cells": [
            {
                key: c[key]
                for key in ("cell", "status", "source", "original", "flaky", "original_inside_spread")
                if key in c
            }
            for c in evidence.get("cells", [])
        ],
        "values": [
            {key: v[key] for key in ("name", "status", "original", "flaky") if key in v}
            for v in evidence.get("values", [])
        ],
        "artifacts": [
            {
                "path": a["path"],
                "status": a["status"],
                **(
                    {"arrays": [{k: e.get(k) for k in BLIND_ARRAY_FIELDS} for e in a["arrays"]]}
                    if "arrays" in a
                    else {}
                ),
            }
            for a in evidence.get("artifacts", [])
        ],
        "reason": "The rerun could not run." if evidence.get("reason") else "",
        "environment_changes": {key: changes.get(key) for key in ("packages", "python", "gpus", "cuda")}
        if changes
        else None,
        "withheld": BLIND_WITHHELD,
    }


def _environment_changes(diff: dict[str, Any] | None) -> dict[str, Any] | None:
    if not diff:
        return None
    return {key: diff.get(key) for key in ("identical", "changes", "packages", "gpus", "cuda", "python", "os", "cpu")}


class ReviewSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    publication = serializers.IntegerField(source="publication_id")
    reviewer = serializers.SerializerMethodField()
    state = serializers.CharField()
    recommendation = serializers.CharField()
    summary = serializers.CharField()
    submitted_version = serializers.IntegerField(source="submitted_version.number", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    responded_at = serializers.DateTimeField(allow_null=True)
    submitted_at = serializers.DateTimeField(allow_null=True)
    rounds = serializers.JSONField(help_text="Earlier rounds' recommendations and summaries, oldest first.")
    reruns = serializers.SerializerMethodField()
    comments_url = serializers.SerializerMethodField()

    def get_reviewer(self, review: Review) -> str:
        return access.reviewer_name(self.context["request"].user, review)

    def get_reruns(self, review: Review) -> list[dict[str, Any]]:
        return access.rerun_evidence_for(self.context["request"].user, review)

    def get_comments_url(self, review: Review) -> str:
        return self.context["request"].build_absolute_uri(reverse("api-review-comments", args=[review.pk]))


class CommentWriteSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=20_000)
    version = serializers.IntegerField(min_value=1, max_value=MAX_NUMBER, required=False, allow_null=True, default=None)
    cell_id = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    line_start = serializers.IntegerField(
        min_value=1, max_value=MAX_NUMBER, required=False, allow_null=True, default=None
    )
    line_end = serializers.IntegerField(
        min_value=1, max_value=MAX_NUMBER, required=False, allow_null=True, default=None
    )
    output_index = serializers.IntegerField(
        min_value=0, max_value=MAX_NUMBER, required=False, allow_null=True, default=None
    )
    parent = serializers.IntegerField(  # type: ignore[assignment]  # a field named like Field.parent
        min_value=1,
        max_value=MAX_ID,
        required=False,
        allow_null=True,
        default=None,
        help_text="Reply to this comment's thread.",
    )


class CommentSerializer(serializers.Serializer):
    """What `comment_data` gives (for the API schema)."""

    id = serializers.IntegerField()
    parent = serializers.IntegerField(  # type: ignore[assignment]  # a field named like Field.parent
        allow_null=True, help_text="The thread's first comment; null for a thread."
    )
    author = serializers.CharField()
    body = serializers.CharField()
    version = serializers.IntegerField(help_text="The publication version it was written on.")
    cell_id = serializers.CharField(allow_blank=True)
    line_start = serializers.IntegerField(allow_null=True)
    line_end = serializers.IntegerField(allow_null=True)
    output_index = serializers.IntegerField(allow_null=True)
    resolved = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    outdated = serializers.BooleanField(
        required=False, help_text="Only on anchored threads: the cell changed (or is gone) in the version looked at."
    )
    current_source = serializers.CharField(
        required=False, allow_null=True, help_text="The anchored cell's source in the version looked at, if outdated."
    )


def comment_data(comment: ReviewComment, viewer: Any, shown: dict[str, AnchorCell] | None) -> dict[str, Any]:
    """One comment for `viewer`. `shown` maps the cells of the version being looked at: an
    anchored cell whose source changed there (or is gone) makes the comment outdated, and the
    new text is given beside it."""
    review = comment.review
    author = (
        access.reviewer_name(viewer, review)
        if comment.author_id == review.reviewer_id
        else (comment.author.username if comment.author else "deleted user")
    )
    data: dict[str, Any] = {
        "id": comment.pk,
        "parent": comment.parent_id,
        "author": author,
        "body": comment.body,
        "version": comment.version.number,
        "cell_id": comment.cell_id,
        "line_start": comment.line_start,
        "line_end": comment.line_end,
        "output_index": comment.output_index,
        "resolved": comment.resolved_at is not None,
        "created_at": comment.created_at,
    }
    if comment.parent_id is None and comment.cell_id and shown is not None:
        cell = shown.get(comment.cell_id)
        data["outdated"] = cell is None or cell.source_sha256 != comment.cell_source_sha256
        data["current_source"] = cell.source if cell is not None and data["outdated"] else None
    return data
