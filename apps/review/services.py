"""Publication and review: every state change is one transaction, with its notifications."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from apps.accounts.models import User
from apps.compute.models import Run, RunState
from apps.core.licenses import spdx_license_id
from apps.core.queueing import enqueue_on_commit
from apps.core.secrets import hash_secret, new_secret
from apps.projects.models import DatasetVersion, NotebookVersion, Project
from apps.projects.permissions import CAN_UPLOAD, EDITOR_ROLES, require_role
from apps.reproducibility import services as reproducibility
from apps.reproducibility.models import Reproduction

from . import access
from .anchors import by_id, version_cells
from .citation import valid_orcid
from .models import (
    Publication,
    PublicationVersion,
    Recommendation,
    Review,
    ReviewComment,
    ReviewMode,
    ReviewState,
    VersionStatus,
)
from .notifications import notify

MAX_KEYWORDS = 20
MAX_AUTHORS = 100


@dataclass(frozen=True)
class Metadata:
    """What a publication version says about itself (validated by `clean_metadata`)."""

    title: str
    authors: list[dict[str, str]]
    license: str
    abstract: str = ""
    keywords: tuple[str, ...] = ()


def clean_metadata(*, title: str, authors: Any, license: str, abstract: str = "", keywords: Any = ()) -> Metadata:
    errors: dict[str, str] = {}
    title = " ".join((title or "").split())  # one line: titles go into e-mail subjects and citations
    if not title:
        errors["title"] = "A publication needs a title."
    license = (license or "").strip()
    if not license:
        errors["license"] = (
            "A publication needs a license (an SPDX id such as CC-BY-4.0): without one nobody may reuse it."
        )
    elif (canonical := spdx_license_id(license)) is None:
        errors["license"] = (
            f"{license!r} is not an SPDX license id (see https://spdx.org/licenses/; e.g. MIT, CC-BY-4.0)."
        )
    else:
        license = canonical
    cleaned_authors = []
    if not isinstance(authors, list) or not authors:
        errors["authors"] = "List at least one author: [{'given_names': ..., 'family_names': ..., 'orcid': ...}]."
    elif len(authors) > MAX_AUTHORS:
        errors["authors"] = f"At most {MAX_AUTHORS} authors."
    else:
        for position, author in enumerate(authors, start=1):
            if not isinstance(author, dict):
                errors["authors"] = f"Author {position} must be an object."
                break
            entry = {
                key: str(author.get(key) or "").strip()[:200]
                for key in ("given_names", "family_names", "orcid", "affiliation")
            }
            entry["orcid"] = entry["orcid"].removeprefix("https://orcid.org/")
            if not entry["family_names"]:
                errors["authors"] = f"Author {position} needs family_names."
                break
            if entry["orcid"] and not valid_orcid(entry["orcid"]):
                errors["authors"] = (
                    f"Author {position}: {entry['orcid']!r} is not a valid ORCID iD (checksum or shape)."
                )
                break
            cleaned_authors.append(entry)
    if not isinstance(keywords, list | tuple) or not all(isinstance(k, str) for k in keywords):
        errors["keywords"] = "Keywords are a list of strings."
        keywords = ()
    cleaned_keywords = tuple(dict.fromkeys(k.strip()[:100] for k in keywords if k.strip()))
    if len(cleaned_keywords) > MAX_KEYWORDS:
        errors["keywords"] = f"At most {MAX_KEYWORDS} keywords."
    if errors:
        raise ValidationError(errors)
    return Metadata(
        title=title[:300],
        authors=cleaned_authors,
        license=license,
        abstract=(abstract or "").strip()[:10_000],
        keywords=cleaned_keywords,
    )


def publishable_runs(notebook: Any) -> Any:
    """Runs that can stand as a publication's result: the authors' own, succeeded with an
    output; not reruns of a reproduction check (a reviewer's, in particular, whose creator,
    node and environment a single-blind review must keep from the authors)."""
    return (
        Run.objects.filter(notebook_version__notebook=notebook, state=RunState.SUCCEEDED)
        .exclude(output_storage_name="")
        .filter(reference_run__isnull=True, creator_hidden=False, independent=False)
    )


def _published_run(notebook_version: NotebookVersion, run: Run | None) -> Run:
    """The run whose executed notebook the version shows: the given one, or the version's latest
    succeeded run."""
    if run is None:
        run = (
            publishable_runs(notebook_version.notebook)
            .filter(notebook_version=notebook_version)
            .order_by("-finished_at", "-pk")
            .first()
        )
        if run is None:
            raise ValidationError(
                {"run": "Run this notebook version first: a publication shows its executed notebook and can be rerun."}
            )
    if run.notebook_version_id != notebook_version.pk:
        raise ValidationError({"run": f"Run {run.pk} executed another notebook version."})
    if not publishable_runs(notebook_version.notebook).filter(pk=run.pk).exists():
        raise ValidationError({"run": f"Run {run.pk} is a rerun or a reviewer's check, not the authors' result."})
    if run.state != RunState.SUCCEEDED or not run.output_storage_name:
        raise ValidationError({"run": f"Run {run.pk} did not succeed with an output ({run.state})."})
    return run


def _add_version(
    *,
    publication: Publication,
    user: User,
    notebook_version: NotebookVersion,
    run: Run | None,
    metadata: Metadata,
    datasets: list[DatasetVersion],
    submit_for_review: bool,
) -> PublicationVersion:
    if notebook_version.notebook_id != publication.notebook_id:
        raise ValidationError({"notebook_version": "The version must be of the publication's notebook."})
    for dataset in datasets:
        if dataset.dataset.project_id != publication.project_id:
            raise ValidationError({"datasets": "Related datasets must belong to the publication's project."})
    number = (publication.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    now = timezone.now()
    version = PublicationVersion.objects.create(
        publication=publication,
        number=number,
        notebook_version=notebook_version,
        run=_published_run(notebook_version, run),
        title=metadata.title,
        abstract=metadata.abstract,
        keywords=list(metadata.keywords),
        license=metadata.license,
        authors=metadata.authors,
        status=VersionStatus.IN_REVIEW if submit_for_review else VersionStatus.PUBLISHED,
        published_at=None if submit_for_review else now,
        created_by=user,
    )
    version._setting_datasets = True  # type: ignore[attr-defined]  # the one time they may be set
    version.datasets.set(datasets)
    del version._setting_datasets  # type: ignore[attr-defined]
    return version


def publication_create(
    *,
    project: Project,
    user: User,
    notebook_version: NotebookVersion,
    metadata: Metadata,
    run: Run | None = None,
    datasets: list[DatasetVersion] | None = None,
    review_mode: str = ReviewMode.OPEN,
    submit_for_review: bool = True,
) -> PublicationVersion:
    """Publish a notebook version (or submit it for review first). `project` must come from
    `get_project_for(user, ...)` so the user's role is known."""
    require_role(project, CAN_UPLOAD, "publish")
    if notebook_version.notebook.project_id != project.pk:
        raise ValidationError({"notebook_version": "The notebook version is not in this project."})
    if review_mode not in ReviewMode.values:
        raise ValidationError({"review_mode": f"Choose one of {', '.join(ReviewMode.values)}."})
    with transaction.atomic():
        publication = Publication.objects.create(
            project=project, notebook=notebook_version.notebook, review_mode=review_mode, created_by=user
        )
        return publication_add_version(
            publication=publication,
            user=user,
            notebook_version=notebook_version,
            metadata=metadata,
            run=run,
            datasets=datasets,
            submit_for_review=submit_for_review,
        )


def publication_add_version(
    *,
    publication: Publication,
    user: User,
    notebook_version: NotebookVersion,
    metadata: Metadata,
    run: Run | None = None,
    datasets: list[DatasetVersion] | None = None,
    submit_for_review: bool = True,
) -> PublicationVersion:
    """A new version of a publication (earlier versions stay exactly as they were)."""
    if not access.has_upload_role(user, publication):
        raise PermissionDenied("Only the project's members (member role or higher) can add a version.")
    with transaction.atomic():
        Publication.objects.select_for_update().get(pk=publication.pk)  # one number at a time
        version = _add_version(
            publication=publication,
            user=user,
            notebook_version=notebook_version,
            run=run,
            metadata=metadata,
            datasets=datasets or [],
            submit_for_review=submit_for_review,
        )
        _announce_version(version, user)
    return version


def _members(publication: Publication, *, editors_only: bool = False) -> list[User]:
    # One filter() call: the project and the role must hold for the same membership.
    role = {"memberships__role__in": EDITOR_ROLES} if editors_only else {}
    return list(User.objects.filter(memberships__project_id=publication.project_id, **role))


def _reviewers(publication: Publication) -> list[User]:
    return list(
        User.objects.filter(
            reviews__publication=publication, reviews__state__in=(ReviewState.ACCEPTED, ReviewState.SUBMITTED)
        )
    )


def _announce_version(version: PublicationVersion, user: User) -> None:
    publication = version.publication
    if version.status == VersionStatus.PUBLISHED:
        message = f"“{version.title}” version {version.number} was published."
        recipients = _members(publication) + _reviewers(publication)
    else:
        message = f"“{version.title}” version {version.number} was submitted for review."
        recipients = _members(publication, editors_only=True) + _reviewers(publication)
    notify(recipients, kind="version", message=lambda _: message, url=version.get_absolute_url(), actor=user)


# --- reviewers ------------------------------------------------------------------------------------
def _find_user(who: str) -> User | None:
    """The active account a username names; None for an e-mail address. An address is always
    invited through a link sent to it: account addresses are not verified (nor unique), so
    matching one to an account would hand the review to whoever typed that address first."""
    who = (who or "").strip()
    if not who:
        raise ValidationError({"reviewer": "Name a reviewer by username or e-mail address."})
    if "@" in who:
        try:
            validate_email(who)
        except ValidationError:
            raise ValidationError({"reviewer": f"{who!r} is not an e-mail address."}) from None
        return None
    user = User.objects.filter(username__iexact=who, is_active=True).first()
    if user is None:
        raise ValidationError({"reviewer": f"No ReproLab account has the username {who!r}."})
    return user


def review_invite(*, publication: Publication, inviter: User, who: str) -> Review:
    """Authors or editors invite a reviewer by username or e-mail address (in single-blind
    review, editors only). Members of the project cannot review it (they are its authors). An
    address gets an e-mail with a one-time link that whoever opens it signed in takes (and
    inviting it again sends a fresh link)."""
    if not access.can_invite(inviter, publication):
        # In single-blind review an author's invitation would name the reviewer to them (and
        # "already invited" would answer "who reviews this?"): the editors choose reviewers.
        raise PermissionDenied(
            "Only the editors (owners, maintainers) invite reviewers in single-blind review."
            if publication.review_mode == ReviewMode.SINGLE_BLIND
            else "Only the authors (member role or higher) or the editors invite reviewers."
        )
    reviewer = _find_user(who)
    if reviewer is not None and access.is_author(reviewer, publication):
        raise ValidationError({"reviewer": f"{who} is a member of the project: authors cannot review their own work."})
    with transaction.atomic():
        Publication.objects.select_for_update().get(pk=publication.pk)
        if reviewer is None:
            return _invite_address(publication, inviter, who.strip().lower())
        existing = publication.reviews.filter(reviewer=reviewer).first()
        if existing is not None and existing.state in (ReviewState.INVITED, ReviewState.ACCEPTED):
            raise ValidationError({"reviewer": f"{who} is already invited ({existing.state})."})
        if existing is not None:  # invited again: after declining, or for another round
            if existing.state == ReviewState.SUBMITTED:
                _close_round(existing)
            existing.state, existing.invited_by, existing.responded_at = ReviewState.INVITED, inviter, None
            existing.save()
            review = existing
        else:
            review = Review.objects.create(
                publication=publication, number=_next_number(publication), reviewer=reviewer, invited_by=inviter
            )
        title = publication_title(publication)
        notify(
            [reviewer],
            kind="invitation",
            message=lambda _: f"You are invited to review “{title}”. Accept or decline on the review page.",
            url=f"/reviews/{review.pk}/",
            actor=inviter,
        )
    return review


def _next_number(publication: Publication) -> int:
    return (publication.reviews.aggregate(n=Max("number"))["n"] or 0) + 1


def _close_round(review: Review) -> None:
    """Keep a submitted review's outcome in its rounds, and open a new round."""
    review.rounds = [
        *review.rounds,
        {
            "version": review.submitted_version.number if review.submitted_version else None,
            "recommendation": review.recommendation,
            "summary": review.summary,
            "submitted_at": review.submitted_at.isoformat() if review.submitted_at else None,
        },
    ]
    review.recommendation, review.summary, review.submitted_at, review.submitted_version = "", "", None, None


def publication_title(publication: Publication) -> str:
    latest = publication.versions.order_by("-number").first()
    return latest.title if latest else publication.notebook.path


def _invite_address(publication: Publication, inviter: User, address: str) -> Review:
    review = publication.reviews.filter(reviewer__isnull=True, invited_email=address).first()
    if review is None:
        review = Review.objects.create(
            publication=publication, number=_next_number(publication), invited_email=address, invited_by=inviter
        )
    elif review.state != ReviewState.INVITED:  # declined through an earlier link: invite again
        review.state, review.invited_by, review.responded_at = ReviewState.INVITED, inviter, None
        review.save(update_fields=["state", "invited_by", "responded_at"])
    from .tasks import send_reviewer_invitation

    # A broker outage loses nothing: the beat sweep (review.send_pending_emails) sends it later.
    enqueue_on_commit(send_reviewer_invitation, review.pk)
    return review


def invitation_issue_token(review: Review) -> str:
    """A fresh link token for an e-mail invitation (the previous link stops working)."""
    secret = new_secret("rli_")
    Review.objects.filter(pk=review.pk).update(invitation_token_hash=secret.hash)
    return secret.raw


def invitation_for_token(raw: str) -> Review | None:
    if not raw.startswith("rli_"):
        return None
    return (
        Review.objects.filter(invitation_token_hash=hash_secret(raw), reviewer__isnull=True, state=ReviewState.INVITED)
        .select_related("publication__project", "publication__notebook")
        .first()
    )


def invitation_take(*, review: Review, user: User, accept: bool) -> Review:
    """The person who received an e-mail invitation answers it with their account."""
    with transaction.atomic():
        review = Review.objects.select_for_update().get(pk=review.pk)
        if review.reviewer_id is not None or review.state != ReviewState.INVITED:
            raise ValidationError({"invitation": "This invitation was already answered."})
        publication = review.publication
        if access.is_author(user, publication):
            raise ValidationError(
                {"invitation": "You are a member of the project: authors cannot review their own work."}
            )
        if publication.reviews.filter(reviewer=user).exclude(state=ReviewState.DECLINED).exists():
            raise ValidationError({"invitation": "You already review this publication."})
        publication.reviews.filter(reviewer=user, state=ReviewState.DECLINED).delete()  # one review per person
        review.reviewer = user
        review.invitation_token_hash = ""
        review.save(update_fields=["reviewer", "invitation_token_hash"])
        return review_respond(review=review, user=user, accept=accept)


def _locked(review: Review) -> Review:
    """Take the review's row lock and refresh what state changes are decided on (two answers
    sent at once: the second sees the first's outcome)."""
    fresh = Review.objects.select_for_update().get(pk=review.pk)
    review.state, review.reviewer_id = fresh.state, fresh.reviewer_id
    return review


def review_respond(*, review: Review, user: User, accept: bool) -> Review:
    with transaction.atomic():
        review = _locked(review)
        if review.reviewer_id != user.pk:
            raise PermissionDenied("Only the invited reviewer can answer the invitation.")
        if review.state != ReviewState.INVITED:
            raise ValidationError({"state": f"The invitation was already answered ({review.state})."})
        review.state = ReviewState.ACCEPTED if accept else ReviewState.DECLINED
        review.responded_at = timezone.now()
        review.save(update_fields=["state", "responded_at"])
        verb = "accepted" if accept else "declined"
        notify(
            _members(review.publication, editors_only=True) + ([review.invited_by] if review.invited_by else []),
            kind="invitation_answer",
            message=lambda viewer: f"{access.reviewer_name(viewer, review)} {verb} the invitation to review.",
            url=f"/reviews/{review.pk}/",
            actor=user,
        )
    return review


def _require_active_reviewer(review: Review, user: User) -> None:
    if review.reviewer_id != user.pk:
        raise PermissionDenied("Only the review's reviewer can do this.")
    if review.state != ReviewState.ACCEPTED:
        raise ValidationError({"state": f"Accept the invitation first (the review is {review.state})."})


# --- comments -------------------------------------------------------------------------------------
def comment_add(
    *,
    review: Review,
    user: User,
    body: str,
    version: PublicationVersion | None = None,
    cell_id: str = "",
    line_start: int | None = None,
    line_end: int | None = None,
    output_index: int | None = None,
    parent: ReviewComment | None = None,
) -> ReviewComment:
    """The reviewer opens threads on cells; the reviewer, authors and editors reply."""
    body = (body or "").strip()
    if not body:
        raise ValidationError({"body": "A comment needs text."})
    publication = review.publication
    if parent is not None:
        if parent.review_id != review.pk:
            raise ValidationError({"parent": "Reply within the same review."})
        parent = parent.parent or parent  # one level of threading: replies join the root's thread
        if not access.takes_part(user, review):
            raise PermissionDenied("Only the reviewer, the authors (member role or higher) and the editors reply.")
        if review.state not in (ReviewState.ACCEPTED, ReviewState.SUBMITTED):
            raise ValidationError({"state": "The review is not open."})
        with transaction.atomic():
            comment = ReviewComment.objects.create(
                review=review, parent=parent, author=user, version=parent.version, body=body
            )
            _announce_reply(comment, parent, user)
        return comment

    _require_active_reviewer(review, user)
    if version is None:
        version = publication.versions.order_by("-number").first()
    if version is None or version.publication_id != publication.pk:
        raise ValidationError({"version": "Comment on a version of this publication."})
    anchor = _anchor(version, cell_id, line_start, line_end, output_index)
    return ReviewComment.objects.create(review=review, author=user, version=version, body=body, **anchor)


def _anchor(
    version: PublicationVersion, cell_id: str, line_start: int | None, line_end: int | None, output_index: int | None
) -> dict[str, Any]:
    if not cell_id:
        if line_start is not None or output_index is not None:
            raise ValidationError({"cell_id": "Lines and outputs are anchored within a cell: name the cell."})
        return {}
    cell = by_id(version_cells(version)).get(cell_id)
    if cell is None:
        raise ValidationError({"cell_id": f"Version {version.number} has no cell {cell_id!r}."})
    if line_start is not None or line_end is not None:
        start = line_start if line_start is not None else line_end
        end = line_end if line_end is not None else line_start
        if start is None or end is None or not 1 <= start <= end <= cell.line_count:
            raise ValidationError(
                {"line_start": f"Lines run from 1 to {cell.line_count} in this cell, with line_start <= line_end."}
            )
        line_start, line_end = start, end
    if output_index is not None and not 0 <= output_index < cell.output_count:
        raise ValidationError({"output_index": f"This cell has {cell.output_count} output(s), numbered from 0."})
    return {
        "cell_id": cell.cell_id,
        "cell_source_sha256": cell.source_sha256,
        "line_start": line_start,
        "line_end": line_end,
        "output_index": output_index,
    }


def _announce_reply(comment: ReviewComment, root: ReviewComment, user: User) -> None:
    review = comment.review
    participants = {c.author_id for c in root.replies.all()} | {root.author_id, review.reviewer_id}
    recipients = list(User.objects.filter(pk__in=[p for p in participants if p]))
    if user.pk == review.reviewer_id:
        recipients += _members(review.publication, editors_only=True)

    def message(viewer: User) -> str:
        who = access.reviewer_name(viewer, review) if user.pk == review.reviewer_id else user.username
        return f"{who} replied in a review thread."

    notify(recipients, kind="reply", message=message, url=f"/reviews/{review.pk}/#comment-{root.pk}", actor=user)


def comment_set_resolved(*, comment: ReviewComment, user: User, resolved: bool) -> ReviewComment:
    review = comment.review
    if not access.takes_part(user, review):
        raise PermissionDenied(
            "Only the reviewer, the authors (member role or higher) and the editors resolve threads."
        )
    if comment.parent_id is not None:
        raise ValidationError({"comment": "Resolve the thread's first comment."})
    comment.resolved_at = timezone.now() if resolved else None
    comment.resolved_by = user if resolved else None
    comment.save(update_fields=["resolved_at", "resolved_by"])
    return comment


# --- rerun, recommendation, decision --------------------------------------------------------------
def review_rerun(
    *,
    review: Review,
    user: User,
    version: PublicationVersion | None = None,
    rtol: float = 1e-9,
    atol: float = 0.0,
    repeats: int = 1,
    requirements: Any = None,
) -> Reproduction:
    """A reproduction check of the version's run, started by the reviewer and attached to the
    review. Its runs are independent: only the reviewer's own nodes or staff-shared nodes that no
    project member owns may take them (apps/compute/trust.py)."""
    _require_active_reviewer(review, user)
    version = version or review.publication.versions.order_by("-number").first()
    if version is None or version.publication_id != review.publication_id:
        raise ValidationError({"version": "Rerun a version of this publication."})
    with transaction.atomic():
        reproduction = reproducibility.reproduction_start(
            original=version.run,
            user=user,
            rtol=rtol,
            atol=atol,
            repeats=repeats,
            requirements=requirements,
            hide_creator=review.publication.review_mode == ReviewMode.SINGLE_BLIND,
            independent=True,  # never on the authors' nodes
        )
        review.reproductions.add(reproduction)
    return reproduction


def review_submit(*, review: Review, user: User, recommendation: str, summary: str) -> Review:
    if recommendation not in Recommendation.values:
        raise ValidationError({"recommendation": f"Choose one of {', '.join(Recommendation.values)}."})
    summary = (summary or "").strip()
    if not summary:
        raise ValidationError({"summary": "Sum the review up for the authors and the editor."})
    with transaction.atomic():
        review = _locked(review)
        _require_active_reviewer(review, user)
        review.state = ReviewState.SUBMITTED
        review.recommendation = recommendation
        review.summary = summary
        review.submitted_at = timezone.now()
        review.submitted_version = review.publication.versions.order_by("-number").first()
        review.save(update_fields=["state", "recommendation", "summary", "submitted_at", "submitted_version"])
        label = Recommendation(recommendation).label.lower()
        notify(
            _members(review.publication),
            kind="review_submitted",
            message=lambda viewer: f"{access.reviewer_name(viewer, review)} submitted a review: {label}.",
            url=f"/reviews/{review.pk}/",
            actor=user,
        )
    return review


DECISION_STATUS = {
    Recommendation.ACCEPT: VersionStatus.PUBLISHED,
    Recommendation.MINOR_REVISION: VersionStatus.REVISION_REQUESTED,
    Recommendation.MAJOR_REVISION: VersionStatus.REVISION_REQUESTED,
    Recommendation.REJECT: VersionStatus.REJECTED,
}


def decision_record(*, version: PublicationVersion, editor: User, decision: str, note: str = "") -> PublicationVersion:
    """The editor's decision on a version in review: accept publishes it."""
    publication = version.publication
    if not access.is_editor(editor, publication):
        raise PermissionDenied("Only an editor (a project owner or maintainer) records the decision.")
    if decision not in Recommendation.values:
        raise ValidationError({"decision": f"Choose one of {', '.join(Recommendation.values)}."})
    with transaction.atomic():
        version = PublicationVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != VersionStatus.IN_REVIEW:
            raise ValidationError({"decision": f"Version {version.number} is not in review ({version.status})."})
        now = timezone.now()
        version.decision = decision
        version.decision_note = (note or "").strip()[:20_000]
        version.decided_by = editor
        version.decided_at = now
        version.status = DECISION_STATUS[Recommendation(decision)]
        if version.status == VersionStatus.PUBLISHED:
            version.published_at = now
        version.save(update_fields=["decision", "decision_note", "decided_by", "decided_at", "status", "published_at"])
        label = Recommendation(decision).label.lower()
        notify(
            _members(publication) + _reviewers(publication),
            kind="decision",
            message=lambda _: f"Decision on “{version.title}” version {version.number}: {label}.",
            url=version.get_absolute_url(),
            actor=editor,
        )
    version.publication = publication
    return version


@dataclass(frozen=True)
class Badge:
    check: Reproduction
    by_reviewer: bool


def badge_for(version: PublicationVersion) -> Badge | None:
    """The check behind the version's badge: the latest settled one a reviewer ran (independent
    of the authors), else the latest settled one anyone ran. The badge names its tolerances."""
    settled = Reproduction.objects.filter(original_id=version.run_id).filter(~Q(verdict="pending"))
    latest = ("-finished_at", "-pk")
    by_reviewer = settled.filter(reviews__publication_id=version.publication_id).order_by(*latest).first()
    check = by_reviewer or settled.order_by(*latest).first()
    return Badge(check=check, by_reviewer=by_reviewer is not None) if check else None
