"""Pages for environment snapshots and their comparison."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .api import snapshot_for
from .diff import environment_diff


def run_environment(request: HttpRequest, run_id: int) -> HttpResponse:
    snapshot = snapshot_for(request.user, run_id)
    return render(request, "reproducibility/environment.html", {"snapshot": snapshot, "env": snapshot.data})


def run_environment_diff(request: HttpRequest, run_id: int) -> HttpResponse:
    mine = snapshot_for(request.user, run_id)
    against = request.GET.get("against", "")
    if not against.isdigit():
        context = {"snapshot": mine, "env": mine.data, "diff_error": "Give the other run's number to compare with."}
        return render(request, "reproducibility/environment.html", context, status=400)
    other = snapshot_for(request.user, int(against))
    diff = environment_diff(other.data, mine.data)
    return render(request, "reproducibility/environment_diff.html", {"mine": mine, "other": other, "diff": diff})
