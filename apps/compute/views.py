"""Pages for the execution fabric: your compute nodes (owner only), runs (visible exactly when
their project is), and running a notebook version from its page.

Thin: resolve through the selectors and `get_project_for` (404 to outsiders), check the role,
call a service, render. Service validation errors are shown on the page with status 400.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST, require_safe

from apps.accounts.request_user import authenticated_user
from apps.projects.models import NotebookVersion
from apps.projects.permissions import CAN_UPLOAD, get_project_for, has_role, require_role
from apps.projects.rendering import render_stored
from apps.projects.views import render_requester, sandboxed_render_response

from . import agent_dist, services
from .describe import NodeCapabilities, node_capabilities, run_requirements
from .forms import NodeForm, RunForm
from .models import ACTIVE_STATES, FINAL_STATES, Node, Run, RunState
from .selectors import nodes_of, nodes_serving, runs_for_listing

RUNS_PER_PAGE = 30
NODE_RECENT_RUNS = 20


def _attach_errors(form: BaseForm, error: ValidationError) -> None:
    """Put a service's ValidationError on the form, on the field it names where the form has it."""
    errors = error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}
    for name, field_messages in errors.items():
        for message in field_messages:
            form.add_error(name if name in form.fields else None, message)


# --- nodes -------------------------------------------------------------------------------------------
@dataclass
class NodeView:
    """A node with what its pages show: online status and its capabilities in words."""

    node: Node
    status: str  # online | busy | offline | never | revoked
    status_label: str
    active_runs: int
    caps: NodeCapabilities

    @property
    def summary(self) -> str:
        return self.caps.summary if self.node.capabilities else "Capabilities not reported yet"


def _node_view(node: Node, active_runs: int, now: dt.datetime) -> NodeView:
    fresh = now - dt.timedelta(seconds=settings.REPROLAB_NODE_ACTIVE_SECONDS)
    if node.revoked_at is not None:
        status, label = "revoked", "revoked"
    elif node.last_seen_at is not None and node.last_seen_at >= fresh:
        status, label = "online", "online"
    elif active_runs:
        # An agent busy with a run heartbeats the run, not the node: it is working, not gone.
        status, label = "busy", "running"
    elif node.last_seen_at is None:
        status, label = "never", "never connected"
    else:
        status, label = "offline", "offline"
    return NodeView(
        node=node,
        status=status,
        status_label=label,
        active_runs=active_runs,
        caps=node_capabilities(node.capabilities),
    )


def _active_run_counts(nodes: list[Node], now: dt.datetime) -> dict[int, int]:
    rows = (
        Run.objects.filter(node__in=nodes, state__in=ACTIVE_STATES, lease_expires_at__gt=now)
        .values_list("node_id")
        .annotate(n=Count("id"))
    )
    return {node_id: n for node_id, n in rows}


def _node_views(nodes: list[Node]) -> list[NodeView]:
    now = timezone.now()
    counts = _active_run_counts(nodes, now)
    return [_node_view(node, counts.get(node.pk, 0), now) for node in nodes]


@login_required
def node_list(request: HttpRequest) -> HttpResponse:
    """Your nodes, and every other node that may take your runs (and which of them)."""
    nodes = list(nodes_of(request.user))
    serving = nodes_serving(request.user)
    views = _node_views([*nodes, *(s.node for s in serving)])
    context = {
        "nodes": views[: len(nodes)],
        "serving": list(zip(serving, views[len(nodes) :], strict=True)),
        "active_seconds": settings.REPROLAB_NODE_ACTIVE_SECONDS,
    }
    return render(request, "compute/node_list.html", context)


def _agent_commands(request: HttpRequest, node: Node, token: str | None) -> dict[str, Any]:
    """How to start this node's agent: on a machine, and in a Colab cell."""
    site = request.build_absolute_uri("/").rstrip("/")
    try:
        wheel = agent_dist.wheel_filename()
    except agent_dist.AgentDistError as error:
        return {"error": str(error)}
    wheel_url = request.build_absolute_uri(reverse("agent-wheel", args=[wheel]))
    token_arg = shlex.quote(token) if token else '"$REPROLAB_NODE_TOKEN"'
    concurrency = str(node.max_concurrency)
    run = f"reprolab-agent --server {shlex.quote(site)} --token {token_arg} --concurrency {concurrency}"
    colab = "\n".join(
        [
            f"# ReproLab node {node.name!r}: attended sessions only. Interrupt this cell to stop it.",
            f"!pip install -q {shlex.quote(wheel_url)}",
            "import getpass, os",
            'os.environ["REPROLAB_NODE_TOKEN"] = getpass.getpass("ReproLab node token (rln_…): ")',
            f"!reprolab-agent --server {shlex.quote(site)} --concurrency {concurrency}"
            " --work-dir /content/reprolab/work --cache-dir /content/reprolab/cache",
        ]
    )
    return {
        "site": site,
        "wheel": wheel,
        "wheel_url": wheel_url,
        "install": f"pip install {shlex.quote(wheel_url)}",
        "run": run,
        "export": None if token else "export REPROLAB_NODE_TOKEN=rln_…  # the token shown when you registered",
        "colab": colab,
    }


def _render_node(request: HttpRequest, node: Node, *, token: str | None = None, status: int = 200) -> HttpResponse:
    """The node page; `token` is the raw token, shown only in the response that created it."""
    view = _node_views([node])[0]
    recent = runs_for_listing(request.user).filter(node=node)[:NODE_RECENT_RUNS]
    context = {
        "view": view,
        "node": node,
        "token": token,
        "commands": _agent_commands(request, node, token),
        "runs": recent,
        "active_seconds": settings.REPROLAB_NODE_ACTIVE_SECONDS,
    }
    response = render(request, "compute/node_detail.html", context, status=status)
    if token:
        response["Cache-Control"] = "no-store"  # the only copy of the token: keep it out of caches
    return response


@login_required
def node_create(request: HttpRequest) -> HttpResponse:
    user = authenticated_user(request)
    form = NodeForm(request.POST or None, owner=user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            registered = services.node_register(
                owner=user,
                name=data["name"],
                tags=data["tags"],
                max_concurrency=data["max_concurrency"],
                shared=data.get("shared", False),
                projects=list(data["projects"]),
            )
        except ValidationError as error:
            _attach_errors(form, error)
        else:
            messages.success(request, f"Node “{registered.node.name}” registered. Copy its token now.")
            # Rendered, not redirected: the token exists only in this response.
            return _render_node(request, registered.node, token=registered.token)
    return render(request, "compute/node_form.html", {"form": form}, status=400 if form.errors else 200)


def _own_node(request: HttpRequest, pk: int) -> Node:
    return get_object_or_404(nodes_of(request.user), pk=pk)  # someone else's node: 404


@login_required
def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _render_node(request, _own_node(request, pk))


@require_POST
@login_required
def node_rotate_token(request: HttpRequest, pk: int) -> HttpResponse:
    node = _own_node(request, pk)
    token = services.node_rotate_token(node=node)
    messages.success(request, "New token issued; the old one no longer works. Copy it now.")
    return _render_node(request, node, token=token)


@require_POST
@login_required
def node_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    node = _own_node(request, pk)
    services.node_revoke(node=node)
    messages.info(
        request, f"Node “{node.name}” revoked: its agent can no longer connect. Rotate the token to reuse it."
    )
    return redirect("compute:node", pk=node.pk)


# --- runs ------------------------------------------------------------------------------------------------
def run_list(request: HttpRequest) -> HttpResponse:
    runs = runs_for_listing(request.user)
    state = request.GET.get("state", "")
    if state in RunState.values:
        runs = runs.filter(state=state)
    else:
        state = ""
    project = request.GET.get("project", "").strip()
    if project:
        runs = runs.filter(project__slug=project)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "compute/run_list.html",
        {"page": page, "state": state, "project": project, "states": RunState.choices},
    )


def _visible_run(request: HttpRequest, pk: int) -> Run:
    return get_object_or_404(runs_for_listing(request.user), pk=pk)  # an outsider's view of a private run: 404


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _parameter_rows(run: Run) -> list[dict[str, Any]]:
    """Every declared parameter with the value the run used: sent, or the notebook's default."""
    declared = [p for p in run.notebook_version.parameters if isinstance(p, dict) and p.get("name")]
    rows = []
    for parameter in declared:
        name = parameter["name"]
        if name in run.parameters:
            rows.append({"name": name, "value": _json_text(run.parameters[name]), "default": False})
        else:
            rows.append({"name": name, "value": str(parameter.get("default", "")), "default": True})
    known = {p["name"] for p in declared}
    rows += [
        {"name": name, "value": _json_text(value), "default": False}
        for name, value in run.parameters.items()
        if name not in known
    ]
    return rows


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _visible_run(request, pk)
    project = get_project_for(request.user, run.project.slug)  # annotates the requester's role
    user = request.user
    can_cancel = (
        user.is_authenticated and not run.is_final and (run.created_by_id == user.pk or has_role(project, CAN_UPLOAD))
    )
    config = {
        "run_id": run.pk,
        "state": run.state,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "events_url": reverse("api-run-events", kwargs={"pk": run.pk}),
        "run_url": reverse("api-run-detail", kwargs={"pk": run.pk}),
        "output_url": reverse("api-run-output", kwargs={"pk": run.pk}),
        "render_url": reverse("compute:run-render", kwargs={"pk": run.pk}),
        "ws_path": f"/ws/runs/{run.pk}/",
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "server_now": _iso(timezone.now()),
        "final_states": [str(s) for s in FINAL_STATES],
    }
    context = {
        "run": run,
        "project": project,
        "notebook": run.notebook_version.notebook,
        "parameters": _parameter_rows(run),
        "requirements": run_requirements(run.requirements),
        "datasets": list(run.input_datasets.all()),
        "can_cancel": can_cancel,
        "can_reproduce": run.state == RunState.SUCCEEDED and bool(run.output_sha256) and has_role(project, CAN_UPLOAD),
        "node_is_mine": run.node is not None and run.node.owner_id == user.pk,
        "config": config,
    }
    return render(request, "compute/run_detail.html", context)


@xframe_options_sameorigin
@require_safe
def run_render(request: HttpRequest, pk: int) -> HttpResponse:
    """The run's executed notebook as the sandboxed iframe document of its page: the renderer,
    cache (by sha256), CSP and rate limit of notebook versions. 404 until there is an output."""
    run = _visible_run(request, pk)
    if not run.output_sha256 or not run.output_storage_name:
        raise Http404("This run has no executed notebook.")
    result = render_stored(
        sha256=run.output_sha256, storage_name=run.output_storage_name, requester=render_requester(request)
    )
    return sandboxed_render_response(request, result)


@require_POST
@login_required
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _visible_run(request, pk)
    project = get_project_for(request.user, run.project.slug)
    if run.created_by_id != request.user.pk:
        require_role(project, CAN_UPLOAD, "cancel runs")  # a viewer: 403
    if run.is_final:
        messages.info(request, f"Run {run.pk} already ended ({run.state}).")
    else:
        run = services.run_cancel(run=run)
        if run.state == RunState.CANCELLED:
            messages.success(request, f"Run {run.pk} cancelled.")
        else:
            messages.info(request, f"Asked the node to stop run {run.pk}; it stops at its next heartbeat.")
    return redirect("compute:run", pk=run.pk)


@require_POST
@login_required
def run_submit(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    """The "Run this version" form on the notebook page."""
    project = get_project_for(request.user, slug)
    require_role(project, CAN_UPLOAD, "run notebooks")
    version = get_object_or_404(
        NotebookVersion.objects.select_related("notebook"), pk=version_id, notebook__project=project
    )
    form = RunForm(request.POST, version=version, project=project)
    if form.is_valid():
        try:
            run = services.run_submit(
                project=project,
                user=authenticated_user(request),
                notebook_version=version,
                parameters=form.parameters(),
                dataset_versions=list(form.cleaned_data["datasets"]),
            )
        except ValidationError as error:
            _attach_errors(form, error)
        else:
            messages.success(request, f"Run {run.pk} queued: {version.notebook.path} v{version.number}.")
            return redirect("compute:run", pk=run.pk)
    errors = [
        str(message) if name == NON_FIELD_ERRORS else f"{form.fields[name].label or name}: {message}"
        for name, field_errors in form.errors.items()
        for message in field_errors
    ]
    context = {
        "project": project,
        "notebook": version.notebook,
        "version": version,
        "errors": errors,
        "fields": form.submitted_fields(),
        "selected_datasets": form.selected_dataset_ids(),
    }
    return render(request, "compute/run_submit_failed.html", context, status=400)
