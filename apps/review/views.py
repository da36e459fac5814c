"""Pages for readers (landing pages, citations, diffs), authors (publish, invite, versions),
reviewers (the review desk) and editors (the decision). Thin: access, form, service."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST, require_safe

from apps.accounts.request_user import authenticated_user
from apps.core.inputs import MAX_ID, MAX_NUMBER, parse_int
from apps.core.uploads import blob_response
from apps.projects.models import Notebook
from apps.projects.permissions import CAN_UPLOAD, get_project_for, require_role
from apps.projects.rendering import render_stored
from apps.projects.views import render_requester, sandboxed_render_response
from apps.reproducibility.api import crate_response
from apps.reproducibility.views import report_response

from . import access, services
from .anchors import by_id, version_cells
from .citation import apa, bibtex, citation_cff
from .forms import PublishForm
from .metadata import citation_meta, publication_datacite, publication_ld, signposting_links
from .models import Notification, PublicationVersion, Review, ReviewComment, ReviewMode, ReviewState
from .notebook_diff import diff_summary, notebook_diff
from .serializers import comment_data


def _error_text(error: ValidationError) -> str:
    return " ".join(error.messages)


# --- readers ----------------------------------------------------------------------------------------
@require_safe
def publication_latest(request: HttpRequest, publication_id: int) -> HttpResponse:
    publication = access.get_publication_for(request.user, publication_id)
    version = access.versions_visible_to(request.user, publication).order_by("-number").first()
    if version is None:
        raise Http404("No such publication.")
    return redirect(version.get_absolute_url())


@require_safe
def landing(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    return _landing_response(request, access.get_version_for(request.user, publication_id, number))


def _landing_response(request: HttpRequest, version: PublicationVersion, *, status: int = 200) -> HttpResponse:
    """The landing page; after a refused form (status 400/403) with what was typed still in it."""
    publication = version.publication
    user = request.user
    badge = services.badge_for(version)
    versions = list(access.versions_visible_to(user, publication).order_by("-number"))
    context: dict[str, Any] = {
        "version": version,
        "publication": publication,
        "versions": versions,
        "badge": badge,
        # Single-blind: the badge gives the verdict, date and tolerances only; where the check ran
        # (the reviewer's machine: Python, OS, GPU) is withheld like the rest of its evidence.
        "badge_environment": ""
        if publication.review_mode == ReviewMode.SINGLE_BLIND
        else _badge_environment(badge.check if badge else None),
        "apa": apa(citation_meta(request, version)),
        "structured_data": publication_ld(request, version) if version.is_published else None,
        "is_editor": access.is_editor(user, publication),
        "is_author": access.is_author(user, publication),
        "can_invite": access.can_invite(user, publication),
        "my_review": access.review_of(user, publication),
        "reviews": [
            {"review": r, "name": access.reviewer_name(user, r)}
            for r in publication.reviews.select_related("reviewer").order_by("number")
            if access.is_author(user, publication) or r.reviewer_id == getattr(user, "pk", None)
        ],
        "posted": request.POST if status != 200 else {},
    }
    response = render(request, "review/landing.html", context, status=status)
    if version.is_published:
        response["Link"] = signposting_links(request, version)
    return response


def _badge_environment(reproduction: Any) -> str:
    """ "Python 3.11, NVIDIA H200" for the badge: what the rerun ran on, not who or where."""
    if reproduction is None:
        return ""
    rerun = reproduction.reruns.order_by("pk").first()
    snapshot = getattr(rerun, "environment", None) if rerun else None
    if snapshot is None:
        return ""
    data = snapshot.data
    parts = [f"Python {data.get('python', {}).get('version', '?')}", data.get("os", {}).get("system", "")]
    gpus = data.get("gpus") or []
    parts.append(gpus[0].get("name", "GPU") if gpus else "CPU only")
    return ", ".join(p for p in parts if p)


@xframe_options_sameorigin
@require_safe
def rendered(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    """The executed notebook the version shows, as the sandboxed iframe document."""
    version = access.get_version_for(request.user, publication_id, number)
    run = version.run
    result = render_stored(
        sha256=run.output_sha256, storage_name=run.output_storage_name, requester=render_requester(request)
    )
    return sandboxed_render_response(request, result)


@require_safe
def notebook_download(request: HttpRequest, publication_id: int, number: int) -> FileResponse:
    version = access.get_version_for(request.user, publication_id, number)
    notebook = version.notebook_version
    return blob_response(
        storage_name=notebook.storage_name,
        filename=notebook.notebook.name,
        sha256=notebook.sha256,
        content_type="application/x-ipynb+json",
    )


@require_safe
def crate(request: HttpRequest, publication_id: int, number: int) -> FileResponse:
    return crate_response(request, access.get_version_for(request.user, publication_id, number).run)


@require_safe
def report(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    return report_response(request, access.get_version_for(request.user, publication_id, number).run)


@require_safe
def datacite_json(request: HttpRequest, publication_id: int, number: int) -> JsonResponse:
    version = access.get_version_for(request.user, publication_id, number)
    response = JsonResponse(publication_datacite(request, version), json_dumps_params={"indent": 2})
    response["Content-Type"] = "application/vnd.datacite.datacite+json"
    return response


def _text_download(body: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


@require_safe
def cite_bibtex(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    version = access.get_version_for(request.user, publication_id, number)
    return _text_download(
        bibtex(citation_meta(request, version)), "application/x-bibtex", f"pub{publication_id}-v{number}.bib"
    )


@require_safe
def cite_cff(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    version = access.get_version_for(request.user, publication_id, number)
    return _text_download(citation_cff(citation_meta(request, version)), "application/x-yaml", "CITATION.cff")


@require_safe
def cite_apa(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    version = access.get_version_for(request.user, publication_id, number)
    return _text_download(apa(citation_meta(request, version)), "text/plain", f"pub{publication_id}-v{number}.txt")


def _notebook_json(version: PublicationVersion) -> dict[str, Any]:
    with default_storage.open(version.notebook_version.storage_name, "rb") as handle:
        loaded: dict[str, Any] = json.load(handle)
        return loaded


@require_safe
def diff(request: HttpRequest, publication_id: int) -> HttpResponse:
    """Two versions side by side, as nbdime sees the change (cached: versions never change)."""
    publication = access.get_publication_for(request.user, publication_id)
    versions = {
        v.number: v for v in access.versions_visible_to(request.user, publication).select_related("notebook_version")
    }
    try:
        old, new = versions[int(request.GET["from"])], versions[int(request.GET["to"])]
    except (KeyError, ValueError):
        return render(
            request,
            "review/diff.html",
            {"publication": publication, "versions": sorted(versions.values(), key=lambda v: v.number), "error": True},
            status=400 if request.GET else 200,
        )
    key = f"nbdiff:v1:{old.notebook_version.sha256}:{new.notebook_version.sha256}"
    changes = cache.get(key)
    if changes is None:
        changes = notebook_diff(_notebook_json(old), _notebook_json(new))
        cache.set(key, changes, 24 * 3600)
    context = {
        "publication": publication,
        "versions": sorted(versions.values(), key=lambda v: v.number),
        "old": old,
        "new": new,
        "changes": changes,
        "summary": diff_summary(changes),
    }
    return render(request, "review/diff.html", context)


# --- authors and editors ------------------------------------------------------------------------------
@login_required
def publish(request: HttpRequest, slug: str, path: str) -> HttpResponse:
    """Publish (or submit for review) a notebook version; with ?publication=N, a new version of
    an existing publication."""
    project = get_project_for(request.user, slug)
    require_role(project, CAN_UPLOAD, "publish")
    notebook = get_object_or_404(Notebook, project=project, path=path)
    publication = None
    if request.GET.get("publication"):
        raw = request.GET["publication"]
        if not (raw.isascii() and raw.isdigit()):
            raise Http404("No such publication.")
        publication = access.get_publication_for(request.user, int(raw))
        if publication.notebook_id != notebook.pk:
            raise Http404("No such publication of this notebook.")
    form = PublishForm(request.POST or None, notebook=notebook, new_version=publication is not None)
    if request.method == "POST" and form.is_valid():
        try:
            inputs = form.service_inputs()
            user = authenticated_user(request)
            if publication is None:
                version = services.publication_create(
                    project=project, user=user, review_mode=form.cleaned_data["review_mode"], **inputs
                )
            else:
                version = services.publication_add_version(publication=publication, user=user, **inputs)
        except ValidationError as error:
            form.add_error(None, _error_text(error))
        else:
            return redirect(version.get_absolute_url())
    return render(
        request,
        "review/publish.html",
        {"project": project, "notebook": notebook, "form": form, "publication": publication},
        status=400 if form.errors else 200,
    )


@require_POST
@login_required
def invite(request: HttpRequest, publication_id: int) -> HttpResponse:
    publication = access.get_publication_for(request.user, publication_id)
    try:
        services.review_invite(
            publication=publication, inviter=authenticated_user(request), who=request.POST.get("reviewer", "")
        )
    except (ValidationError, PermissionDenied) as error:
        return _refused(request, publication_id, error)
    messages.success(request, "Invitation sent.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = f"/pub/{publication_id}"
    return redirect(next_url)


def _refused(request: HttpRequest, publication_id: int, error: Exception, number: int | None = None) -> HttpResponse:
    """A refused landing-page form: the page again, with the reason and what was typed."""
    messages.error(request, _error_text(error) if isinstance(error, ValidationError) else str(error))
    publication = access.get_publication_for(request.user, publication_id)
    versions = access.versions_visible_to(request.user, publication)
    version = versions.filter(number=number).first() if number else versions.order_by("-number").first()
    if version is None:
        raise Http404("No such publication.")
    version.publication = publication
    return _landing_response(request, version, status=403 if isinstance(error, PermissionDenied) else 400)


@require_POST
@login_required
def decide(request: HttpRequest, publication_id: int, number: int) -> HttpResponse:
    version = access.get_version_for(request.user, publication_id, number)
    try:
        services.decision_record(
            version=version,
            editor=authenticated_user(request),
            decision=request.POST.get("decision", ""),
            note=request.POST.get("note", ""),
        )
    except (ValidationError, PermissionDenied) as error:
        return _refused(request, publication_id, error, number)
    return redirect(version.get_absolute_url())


# --- reviewers ----------------------------------------------------------------------------------------
def _review_context(request: HttpRequest, review: Review) -> dict[str, Any]:
    user = request.user
    publication = review.publication
    versions = list(publication.versions.order_by("-number"))
    shown = versions[0]
    if request.GET.get("version"):
        shown = next((v for v in versions if str(v.number) == request.GET["version"]), shown)
    cells = version_cells(shown)
    cell_map = by_id(cells)
    comments = list(review.comments.select_related("author", "version", "review__publication", "review__reviewer"))
    data = {c.pk: comment_data(c, user, cell_map) for c in comments}
    threads: dict[str, list[dict[str, Any]]] = {}
    for comment in comments:
        if comment.parent_id is None:
            thread = {**data[comment.pk], "replies": [data[r.pk] for r in comments if r.parent_id == comment.pk]}
            threads.setdefault(comment.cell_id or "", []).append(thread)
    orphaned = [t for cell_id, ts in threads.items() if cell_id and cell_id not in cell_map for t in ts]
    return {
        "review": review,
        "publication": publication,
        "reviewer_name": access.reviewer_name(user, review),
        "is_reviewer": review.reviewer_id == getattr(user, "pk", None),
        "can_reply": access.takes_part(user, review),
        "versions": versions,
        "shown": shown,
        "cells": [{"cell": c, "threads": threads.get(c.cell_id, [])} for c in cells],
        "general": threads.get("", []),
        "orphaned": orphaned,
        "reruns": access.rerun_evidence_for(user, review),
    }


@login_required
def review_desk(request: HttpRequest, review_id: int) -> HttpResponse:
    review = access.get_review_for(request.user, review_id)
    if request.method == "POST":
        try:
            _review_action(request, review)
        except (ValidationError, PermissionDenied) as error:
            # The desk again, with the reason and what was typed: nothing is lost.
            denied = isinstance(error, PermissionDenied)
            messages.error(request, _error_text(error) if isinstance(error, ValidationError) else str(error))
            context = {**_review_context(request, review), "posted": request.POST}
            return render(request, "review/review.html", context, status=403 if denied else 400)
        return redirect(request.get_full_path())
    return render(request, "review/review.html", _review_context(request, review))


def _int_or_none(value: str | None, *, field: str, maximum: int = MAX_NUMBER) -> int | None:
    """An optional whole number from the review desk's forms (ASCII digits, within the column)."""
    if value is None or value == "":
        return None
    return parse_int(value, field=field, maximum=maximum)


def _float(value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a number.") from None


def _review_action(request: HttpRequest, review: Review) -> None:
    user = authenticated_user(request)
    action = request.POST.get("action")
    if action in ("accept", "decline"):
        services.review_respond(review=review, user=user, accept=action == "accept")
    elif action == "comment":
        number = _int_or_none(request.POST.get("version"), field="version")
        version = review.publication.versions.filter(number=number).first() if number else None
        if number and version is None:
            raise ValidationError(f"This publication has no version {number}.")
        services.comment_add(
            review=review,
            user=user,
            body=request.POST.get("body", ""),
            version=version,
            cell_id=request.POST.get("cell_id", ""),
            line_start=_int_or_none(request.POST.get("line_start"), field="line_start"),
            line_end=_int_or_none(request.POST.get("line_end"), field="line_end"),
            output_index=_int_or_none(request.POST.get("output_index"), field="output_index"),
        )
    elif action == "reply":
        parent = get_object_or_404(
            ReviewComment, pk=_int_or_none(request.POST.get("parent"), field="parent", maximum=MAX_ID), review=review
        )
        services.comment_add(review=review, user=user, body=request.POST.get("body", ""), parent=parent)
    elif action in ("resolve", "reopen"):
        comment = get_object_or_404(
            ReviewComment, pk=_int_or_none(request.POST.get("comment"), field="comment", maximum=MAX_ID), review=review
        )
        services.comment_set_resolved(comment=comment, user=user, resolved=action == "resolve")
    elif action == "rerun":
        services.review_rerun(
            review=review,
            user=user,
            rtol=_float(request.POST.get("rtol"), 1e-9),
            atol=_float(request.POST.get("atol"), 0.0),
            repeats=_int_or_none(request.POST.get("repeats"), field="repeats") or 1,
        )
        messages.success(request, "Rerun started: the verdict appears here when it settles.")
    elif action == "submit":
        services.review_submit(
            review=review,
            user=user,
            recommendation=request.POST.get("recommendation", ""),
            summary=request.POST.get("summary", ""),
        )
        messages.success(request, "Review submitted.")
    else:
        raise ValidationError("Unknown action.")


def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """An invitation sent to an e-mail address: whoever opens the link signed in may take it.
    The link is the secret, so nothing about the publication shows without it."""
    review = services.invitation_for_token(token)
    if review is None:
        return render(request, "review/invitation.html", {"review": None}, status=404)
    if request.method == "POST" and request.user.is_authenticated:
        if request.POST.get("action") not in ("accept", "decline"):
            return HttpResponse("Answer with action=accept or action=decline.", status=400, content_type="text/plain")
        try:
            review = services.invitation_take(
                review=review, user=authenticated_user(request), accept=request.POST.get("action") == "accept"
            )
        except ValidationError as error:
            messages.error(request, _error_text(error))
            return redirect(request.path)
        return redirect("review:review", review_id=review.pk) if review.state == "accepted" else redirect("/")
    context = {"review": review, "title": services.publication_title(review.publication), "next": request.path}
    return render(request, "review/invitation.html", context)


@login_required
def my_reviews(request: HttpRequest) -> HttpResponse:
    reviews = Review.objects.filter(reviewer=authenticated_user(request)).exclude(state=ReviewState.DECLINED)
    return render(request, "review/my_reviews.html", {"reviews": reviews.select_related("publication")})


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    user = authenticated_user(request)
    if request.method == "POST":
        Notification.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())
        return redirect("review:notifications")
    return render(request, "review/notifications.html", {"notifications": Notification.objects.filter(user=user)[:200]})
