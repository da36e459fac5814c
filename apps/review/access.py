"""Who may see and do what in publication and review.

- Published versions are public: a publication is the explicit act of making a version citable.
- Unpublished versions (in review, revision requested, rejected) are visible to the project's
  members (the authors) and to the publication's reviewers (not to those who declined).
  Everyone else gets 404, as for any private thing.
- Editors are the project's owners and maintainers: they invite reviewers and decide.
- In single-blind mode a reviewer's identity is known to the reviewer and the editors only;
  everyone else, authors included, sees "Reviewer N".
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404

from apps.projects.models import ROLE_RANK, Membership, Role
from apps.projects.permissions import EDITOR_ROLES

from .models import Publication, PublicationVersion, Review, ReviewMode, ReviewState, VersionStatus

LIVE_REVIEW_STATES = (ReviewState.INVITED, ReviewState.ACCEPTED, ReviewState.SUBMITTED)


def preload(user: Any) -> None:
    """For list endpoints: read the requester's roles and live reviews once, onto the request's
    user object (which lives as long as the request), instead of once per row."""
    if user.is_authenticated:
        roles = Membership.objects.filter(user=user).values_list("project_id", "role")
        user._review_roles = {project_id: Role(role) for project_id, role in roles}
        reviews = Review.objects.filter(reviewer=user, state__in=LIVE_REVIEW_STATES)
        user._live_reviews = {r.publication_id: r for r in reviews}


def _role(user: Any, publication: Publication) -> Role | None:
    if not user.is_authenticated:
        return None
    preloaded: dict[int, Role] | None = getattr(user, "_review_roles", None)
    if preloaded is not None:
        return preloaded.get(publication.project_id)
    membership = Membership.objects.filter(project_id=publication.project_id, user=user).first()
    return Role(membership.role) if membership else None


def is_author(user: Any, publication: Publication) -> bool:
    """A member of the project, whatever the role."""
    return _role(user, publication) is not None


def has_upload_role(user: Any, publication: Publication) -> bool:
    """Member role or higher: may publish and add versions."""
    role = _role(user, publication)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.MEMBER]


def is_editor(user: Any, publication: Publication) -> bool:
    role = _role(user, publication)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.MAINTAINER]


def can_invite(user: Any, publication: Publication) -> bool:
    """Authors (member role or higher: a viewer only reads) or editors invite reviewers; in
    single-blind review, editors only."""
    if publication.review_mode == ReviewMode.SINGLE_BLIND:
        return is_editor(user, publication)
    return has_upload_role(user, publication)


def takes_part(user: Any, review: Review) -> bool:
    """May reply in the review's threads and resolve them: its reviewer, and the authors with
    the member role or higher (viewers read)."""
    return (user.is_authenticated and user.pk == review.reviewer_id) or has_upload_role(user, review.publication)


def review_of(user: Any, publication: Publication) -> Review | None:
    """The user's live review of this publication (invited, accepted or submitted), if any."""
    if not user.is_authenticated:
        return None
    preloaded: dict[int, Review] | None = getattr(user, "_live_reviews", None)
    if preloaded is not None:
        return preloaded.get(publication.pk)
    return publication.reviews.filter(reviewer=user, state__in=LIVE_REVIEW_STATES).first()


def can_see_unpublished(user: Any, publication: Publication) -> bool:
    return is_author(user, publication) or review_of(user, publication) is not None


def publications_visible_to(user: Any) -> QuerySet[Publication]:
    published = Exists(PublicationVersion.objects.filter(publication=OuterRef("pk"), status=VersionStatus.PUBLISHED))
    query = Q(published)
    if user.is_authenticated:
        query |= Q(project__memberships__user=user)
        query |= Q(
            Exists(Review.objects.filter(publication=OuterRef("pk"), reviewer=user, state__in=LIVE_REVIEW_STATES))
        )
    return Publication.objects.filter(query).distinct()


def visible_versions(user: Any, publication: Publication) -> list[PublicationVersion]:
    """Like `versions_visible_to`, from prefetched `publication.versions` (for list pages)."""
    everything = can_see_unpublished(user, publication)
    return [v for v in publication.versions.all() if everything or v.status == VersionStatus.PUBLISHED]


def versions_visible_to(user: Any, publication: Publication) -> QuerySet[PublicationVersion]:
    versions = publication.versions.all()
    if can_see_unpublished(user, publication):
        return versions
    return versions.filter(status=VersionStatus.PUBLISHED)


def get_publication_for(user: Any, publication_id: int) -> Publication:
    publication = publications_visible_to(user).select_related("project", "notebook").filter(pk=publication_id).first()
    if publication is None:
        raise Http404("No such publication.")
    return publication


def get_version_for(user: Any, publication_id: int, number: int) -> PublicationVersion:
    publication = get_publication_for(user, publication_id)
    version = (
        versions_visible_to(user, publication)
        .select_related("notebook_version__notebook", "run__node")
        .filter(number=number)
        .first()
    )
    if version is None:
        raise Http404("No such publication version.")
    version.publication = publication
    return version


def sees_identity(viewer: Any, review: Review) -> bool:
    if review.publication.review_mode == ReviewMode.OPEN:
        return True
    if viewer.is_authenticated and viewer.pk == review.reviewer_id:
        return True
    return is_editor(viewer, review.publication)


def reviewer_name(viewer: Any, review: Review) -> str:
    """What this viewer may know of who wrote the review. An invitation still waiting at an
    e-mail address shows the address to editors only (it is a person's address, not a name)."""
    if review.reviewer is None:
        if is_editor(viewer, review.publication):
            return f"{review.alias} (invited at {review.invited_email})"
        return f"{review.alias} (invited by e-mail)"
    return review.reviewer.username if sees_identity(viewer, review) else review.alias


def reviews_visible_to(user: Any) -> QuerySet[Review]:
    """Reviews a user may read: their own, and the reviews of publications they author or edit
    (identities masked by the serializers where the mode asks for it). A declined invitation is
    the editors' record only: the one who declined no longer sees the unpublished work."""
    if not user.is_authenticated:
        return Review.objects.none()
    member = Q(publication__project__memberships__user=user)
    editing = Membership.objects.filter(user=user, role__in=EDITOR_ROLES).values("project_id")
    open_or_edited = ~Q(state=ReviewState.DECLINED) | Q(publication__project__in=editing)
    return (
        Review.objects.filter((Q(reviewer=user) | member) & open_or_edited)
        .distinct()
        .select_related("publication__project", "reviewer", "submitted_version")
    )


def get_review_for(user: Any, review_id: int) -> Review:
    review = reviews_visible_to(user).filter(pk=review_id).first()
    if review is None:
        raise Http404("No such review.")
    return review


def rerun_evidence_for(viewer: Any, review: Review) -> list[dict[str, Any]]:
    """The review's reruns as `viewer` may see them: whole for those who know the reviewer,
    and otherwise without anything the reviewer's machine wrote (see `blind_evidence`)."""
    from .serializers import blind_evidence, reproduction_evidence

    evidence = [reproduction_evidence(r) for r in review.reproductions.all()]
    evidence.sort(key=lambda e: e["id"], reverse=True)
    if sees_identity(viewer, review):
        return evidence
    return [blind_evidence(e) for e in evidence]
