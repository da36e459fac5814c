"""Pages for environment snapshots and their comparison."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.exceptions import APIException

from apps.accounts.request_user import authenticated_user
from apps.compute.models import Run
from apps.compute.selectors import runs_visible_to
from apps.projects.permissions import CAN_UPLOAD, get_project_for, require_role

from . import services
from .api import against_run_id, reproduction_for, snapshot_for, visible_run
from .diff import environment_diff
from .lineage import lineage_graph, to_svg
from .models import RunReport
from .serializers import ReproduceSerializer
from .services import queue_report


def run_environment(request: HttpRequest, run_id: int) -> HttpResponse:
    snapshot = snapshot_for(request.user, run_id)
    return render(request, "reproducibility/environment.html", {"snapshot": snapshot, "env": snapshot.data})


def run_environment_diff(request: HttpRequest, run_id: int) -> HttpResponse:
    mine = snapshot_for(request.user, run_id)
    try:
        against = against_run_id(request.GET.get("against"))
    except ValidationError:
        context = {"snapshot": mine, "env": mine.data, "diff_error": "Give the other run's number to compare with."}
        return render(request, "reproducibility/environment.html", context, status=400)
    other = snapshot_for(request.user, against)
    diff = environment_diff(other.data, mine.data)
    return render(request, "reproducibility/environment_diff.html", {"mine": mine, "other": other, "diff": diff})


def reproduction_detail(request: HttpRequest, reproduction_id: int) -> HttpResponse:
    reproduction = reproduction_for(request.user, reproduction_id)
    return render(request, "reproducibility/reproduction.html", {"r": reproduction, "report": reproduction.report})


@require_POST
@login_required
def reproduce(request: HttpRequest, run_id: int) -> HttpResponse:
    original = runs_visible_to(request.user).select_related("project").filter(pk=run_id).first()
    if original is None:
        raise Http404("No such run.")
    require_role(get_project_for(request.user, original.project.slug), CAN_UPLOAD, "reproduce runs")
    form = ReproduceSerializer(data=request.POST)
    if not form.is_valid():
        return HttpResponse(f"Invalid reproduction settings: {form.errors}", status=400, content_type="text/plain")
    try:
        reproduction = services.reproduction_start(
            original=original, user=authenticated_user(request), **form.validated_data
        )
    except ValidationError as error:
        return HttpResponse(" ".join(error.messages), status=400, content_type="text/plain")
    except APIException as error:  # a fresh resolve found the resolver unavailable
        return HttpResponse(str(error.detail), status=error.status_code, content_type="text/plain")
    return redirect("reproducibility:reproduction", reproduction_id=reproduction.pk)


def run_lineage_svg(request: HttpRequest, run_id: int) -> HttpResponse:
    """The lineage picture. Served as an image: it runs no script, and labels are XML-escaped."""
    run = visible_run(request.user, run_id)
    response = HttpResponse(to_svg(lineage_graph(run, runs_visible_to(request.user))), content_type="image/svg+xml")
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


def run_report(request: HttpRequest, run_id: int) -> HttpResponse:
    """The printable human report. Built by Celery when the run ends; if it is not there yet,
    ask for it and say so (202) rather than build it in the request."""
    return report_response(request, visible_run(request.user, run_id))


def report_response(request: HttpRequest, run: Run) -> HttpResponse:
    """The report page of a run the caller decided the requester may see."""
    report = RunReport.objects.filter(run=run).first()
    if report is None:
        if run.is_final:
            queue_report(run.pk)
        return render(request, "reproducibility/report_pending.html", {"run": run}, status=202)
    return render(
        request, "reproducibility/report.html", {"run": run, "report": report.data, "built_at": report.built_at}
    )
