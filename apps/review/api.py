"""REST API for publications, reviews, cell-anchored comments and notifications. Thin: look up
what the requester may see (404 otherwise), validate, call a service."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch, prefetch_related_objects
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.request_user import authenticated_user
from apps.compute.models import Run
from apps.core.api import validated
from apps.core.pagination import PageNumberPagination
from apps.core.schema import errors
from apps.projects.models import DatasetVersion, NotebookVersion
from apps.projects.permissions import get_project_for

from . import access, services
from .anchors import by_id, version_cells
from .models import Notification, PublicationVersion, Review, ReviewComment
from .serializers import (
    CommentSerializer,
    CommentWriteSerializer,
    DecisionSerializer,
    InviteSerializer,
    PublicationCreateSerializer,
    PublicationSerializer,
    RerunSerializer,
    ReviewSerializer,
    SubmitSerializer,
    VersionSerializer,
    VersionWriteSerializer,
    comment_data,
    reproduction_evidence,
)


def _version_inputs(publication_project: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Turn ids from the request into objects of the project (unknown ids are a 400, not a 500).
    The notebook version is named, or is the one the named run executed."""
    run = None
    if data["run"] is not None:
        run = (
            Run.objects.select_related("notebook_version__notebook")
            .filter(pk=data["run"], project=publication_project)
            .first()
        )
        if run is None:
            raise ValidationError({"run": "No such run in this project."})
    if data["notebook_version"] is None and run is None:
        raise ValidationError({"run": "Name the run to publish (or a notebook_version and its run)."})
    notebook_version = (
        run.notebook_version
        if data["notebook_version"] is None and run is not None
        else NotebookVersion.objects.select_related("notebook")
        .filter(pk=data["notebook_version"], notebook__project=publication_project)
        .first()
    )
    if notebook_version is None:
        raise ValidationError({"notebook_version": "No such notebook version in this project."})
    datasets = list(
        DatasetVersion.objects.select_related("dataset").filter(
            pk__in=data["datasets"], dataset__project=publication_project
        )
    )
    if len(datasets) != len(set(data["datasets"])):
        raise ValidationError({"datasets": "Some dataset versions are not in this project."})
    metadata = services.clean_metadata(
        title=data["title"],
        authors=[dict(a) for a in data["authors"]],
        license=data["license"],
        abstract=data["abstract"],
        keywords=data["keywords"],
    )
    return {
        "notebook_version": notebook_version,
        "run": run,
        "datasets": datasets,
        "metadata": metadata,
        "submit_for_review": data["submit_for_review"],
    }


# What a publication's JSON shows of its versions, in two queries for any number of them.
PUBLICATION_VERSIONS = Prefetch(
    "versions",
    queryset=PublicationVersion.objects.order_by("number")
    .select_related("notebook_version")
    .prefetch_related("datasets__dataset"),
)


class PublicationListApi(APIView):
    permission_classes = [permissions.IsAuthenticatedOrReadOnly]
    pagination_class = PageNumberPagination  # also tells the schema that the list is paginated

    @extend_schema(responses=PublicationSerializer(many=True))
    def get(self, request: Request) -> Response:
        access.preload(request.user)
        paginator = self.pagination_class()
        publications = access.publications_visible_to(request.user).select_related("project", "notebook")
        publications = publications.prefetch_related(PUBLICATION_VERSIONS)
        page = paginator.paginate_queryset(publications.order_by("-created_at", "-id"), request, view=self)
        data = PublicationSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(request=PublicationCreateSerializer, responses={201: PublicationSerializer, **errors(404)})
    def post(self, request: Request) -> Response:
        data = validated(PublicationCreateSerializer, request.data)
        project = get_project_for(request.user, data["project"])
        version = services.publication_create(
            project=project,
            user=authenticated_user(request),
            review_mode=data["review_mode"],
            **_version_inputs(project, data),
        )
        prefetch_related_objects([version.publication], PUBLICATION_VERSIONS)
        body = PublicationSerializer(version.publication, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)


class PublicationApi(APIView):
    permission_classes = [permissions.IsAuthenticatedOrReadOnly]

    @extend_schema(responses=PublicationSerializer)
    def get(self, request: Request, publication_id: int) -> Response:
        publication = access.get_publication_for(request.user, publication_id)
        prefetch_related_objects([publication], PUBLICATION_VERSIONS)
        return Response(PublicationSerializer(publication, context={"request": request}).data)


class PublicationVersionsApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=VersionWriteSerializer, responses={201: VersionSerializer})
    def post(self, request: Request, publication_id: int) -> Response:
        publication = access.get_publication_for(request.user, publication_id)
        if not access.has_upload_role(request.user, publication):  # before any id is looked up
            raise PermissionDenied("Only the project's members (member role or higher) can add a version.")
        data = validated(VersionWriteSerializer, request.data)
        version = services.publication_add_version(
            publication=publication, user=authenticated_user(request), **_version_inputs(publication.project, data)
        )
        return Response(VersionSerializer(version, context={"request": request}).data, status=status.HTTP_201_CREATED)


class DecisionApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=DecisionSerializer, responses=VersionSerializer)
    def post(self, request: Request, publication_id: int, number: int) -> Response:
        version = access.get_version_for(request.user, publication_id, number)
        data = validated(DecisionSerializer, request.data)
        version = services.decision_record(
            version=version, editor=authenticated_user(request), decision=data["decision"], note=data["note"]
        )
        return Response(VersionSerializer(version, context={"request": request}).data)


class InviteApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=InviteSerializer, responses={201: ReviewSerializer})
    def post(self, request: Request, publication_id: int) -> Response:
        publication = access.get_publication_for(request.user, publication_id)
        data = validated(InviteSerializer, request.data)
        review = services.review_invite(
            publication=publication, inviter=authenticated_user(request), who=data["reviewer"]
        )
        return Response(ReviewSerializer(review, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ReviewListApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=ReviewSerializer(many=True))
    def get(self, request: Request) -> Response:
        user = request.user
        access.preload(user)
        reviews = access.reviews_visible_to(user).prefetch_related("reproductions").order_by("-created_at")[:500]
        return Response(ReviewSerializer(reviews, many=True, context={"request": request}).data)


class ReviewApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=ReviewSerializer)
    def get(self, request: Request, review_id: int) -> Response:
        review = access.get_review_for(request.user, review_id)
        return Response(ReviewSerializer(review, context={"request": request}).data)


class ReviewActionApi(APIView):
    """POST accept | decline | submit | rerun."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("action", str, OpenApiParameter.PATH, enum=["accept", "decline", "submit", "rerun"])
        ],
        request=SubmitSerializer,
        responses={200: ReviewSerializer, 201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, review_id: int, action: str) -> Response:
        review = access.get_review_for(request.user, review_id)
        user = authenticated_user(request)
        if action in ("accept", "decline"):
            review = services.review_respond(review=review, user=user, accept=action == "accept")
        elif action == "submit":
            data = validated(SubmitSerializer, request.data)
            review = services.review_submit(review=review, user=user, **data)
        elif action == "rerun":
            data = validated(RerunSerializer, request.data)
            number, version = data.pop("version"), None
            if number is not None:
                version = review.publication.versions.filter(number=number).first()
                if version is None:
                    raise ValidationError({"version": "No such version of this publication."})
            reproduction = services.review_rerun(review=review, user=user, version=version, **data)
            return Response(reproduction_evidence(reproduction), status=status.HTTP_201_CREATED)
        else:
            raise Http404("No such action.")
        return Response(ReviewSerializer(review, context={"request": request}).data)


def _shown_cells(review: Review, number: Any) -> tuple[PublicationVersion | None, dict[str, Any] | None]:
    """The version the comments are looked at against (?version=N, default the latest)."""
    versions = review.publication.versions
    if number and not (str(number).isascii() and str(number).isdigit()):
        raise ValidationError({"version": f"{number!r} is not a version number."})
    version = versions.filter(number=int(number)).first() if number else versions.order_by("-number").first()
    if number and version is None:
        raise Http404("No such version of this publication.")
    return version, (by_id(version_cells(version)) if version else None)


class CommentsApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("version", int, description="Mark comments outdated against this version.")],
        responses=inline_serializer(
            "ReviewComments",
            {
                "version": serializers.IntegerField(allow_null=True, help_text="The version looked at."),
                "comments": CommentSerializer(many=True),
            },
        ),
    )
    def get(self, request: Request, review_id: int) -> Response:
        review = access.get_review_for(request.user, review_id)
        access.preload(request.user)
        version, shown = _shown_cells(review, request.query_params.get("version"))
        comments = review.comments.select_related("author", "version", "review__publication", "review__reviewer")
        return Response(
            {
                "version": version.number if version else None,
                "comments": [comment_data(c, request.user, shown) for c in comments],
            }
        )

    @extend_schema(request=CommentWriteSerializer, responses={201: CommentSerializer})
    def post(self, request: Request, review_id: int) -> Response:
        review = access.get_review_for(request.user, review_id)
        data = validated(CommentWriteSerializer, request.data)
        parent = None
        if data["parent"] is not None:
            parent = review.comments.filter(pk=data["parent"]).first()
            if parent is None:
                raise ValidationError({"parent": "No such comment in this review."})
        version = None
        if data["version"] is not None:
            version = review.publication.versions.filter(number=data["version"]).first()
            if version is None:
                raise ValidationError({"version": "No such version of this publication."})
        comment = services.comment_add(
            review=review,
            user=authenticated_user(request),
            body=data["body"],
            version=version,
            cell_id=data["cell_id"],
            line_start=data["line_start"],
            line_end=data["line_end"],
            output_index=data["output_index"],
            parent=parent,
        )
        return Response(comment_data(comment, request.user, None), status=status.HTTP_201_CREATED)


class CommentResolveApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("action", str, OpenApiParameter.PATH, enum=["resolve", "reopen"])],
        request=None,
        responses=CommentSerializer,
        operation_id="v1_reviews_comments_resolve_or_reopen",
    )
    def post(self, request: Request, review_id: int, comment_id: int, action: str) -> Response:
        review = access.get_review_for(request.user, review_id)
        comment = ReviewComment.objects.filter(pk=comment_id, review=review).select_related("review").first()
        if comment is None or action not in ("resolve", "reopen"):
            raise Http404("No such comment.")
        comment = services.comment_set_resolved(
            comment=comment, user=authenticated_user(request), resolved=action == "resolve"
        )
        return Response(comment_data(comment, request.user, None))


class NotificationsApi(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("unread", bool, description="Only unread ones.")],
        responses=inline_serializer(
            "Notification",
            {
                "id": serializers.IntegerField(),
                "kind": serializers.CharField(),
                "message": serializers.CharField(),
                "url": serializers.CharField(),
                "created_at": serializers.DateTimeField(),
                "read": serializers.BooleanField(),
            },
            many=True,
        ),
        description="Your newest 200 notifications, newest first.",
    )
    def get(self, request: Request) -> Response:
        notifications = Notification.objects.filter(user=authenticated_user(request))
        if request.query_params.get("unread") in ("1", "true"):
            notifications = notifications.filter(read_at__isnull=True)
        return Response(
            [
                {
                    "id": n.pk,
                    "kind": n.kind,
                    "message": n.message,
                    "url": n.url,
                    "created_at": n.created_at,
                    "read": n.read_at is not None,
                }
                for n in notifications[:200]
            ]
        )

    @extend_schema(
        request=None, responses=inline_serializer("NotificationsMarked", {"marked_read": serializers.IntegerField()})
    )
    def post(self, request: Request) -> Response:
        """Mark every notification read."""
        marked = Notification.objects.filter(user=authenticated_user(request), read_at__isnull=True).update(
            read_at=timezone.now()
        )
        return Response({"marked_read": marked})
