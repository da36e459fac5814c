"""Platform metrics computed from the database: runs by state, success rate, queue wait and run
time percentiles, active nodes and their utilization.

Two views serve them:

* `GET /api/v1/metrics/` (JSON, any logged-in user): figures over the runs the requester can see
  (`runs_visible_to`) and the requester's own nodes; staff see the whole site.
* `GET /metrics` (Prometheus text format 0.0.4): site-wide figures. Open in the embedded mode
  (`DEBUG` or `REPROLAB_DEMO_ALLOWED`); otherwise only to staff (session login) or to a scraper
  sending `Authorization: Bearer <REPROLAB_METRICS_TOKEN>`. Anyone else gets 404, so the endpoint
  is not even confirmed to exist.

Optional settings (read with getattr, so they need not be defined):

* `REPROLAB_METRICS_TOKEN` (default "": no token is accepted) - the scraper's bearer token.
* `REPROLAB_METRICS_WINDOW_SECONDS` (default 86400) - queue wait and run time percentiles cover
  runs that finished within this many seconds.
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, FloatField, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .authentication import bearer_value
from .models import ACTIVE_STATES, Node, Run, RunState
from .selectors import runs_visible_to

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_WINDOW_SECONDS = 24 * 3600
QUANTILES = (0.5, 0.95)
# Finished runs that count towards the success rate; a cancelled run says nothing about success.
SUCCESS_DENOMINATOR = (RunState.SUCCEEDED, RunState.FAILED, RunState.LOST)


# --- percentiles ----------------------------------------------------------------------------------
def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` quantile of `values` by linear interpolation between the closest ranks
    (what PostgreSQL's percentile_cont computes); None for no values."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


class _PercentileContSeconds(Aggregate):
    """PostgreSQL: `percentile_cont(f) WITHIN GROUP (ORDER BY <interval in seconds>)`."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM %(expressions)s))"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float) -> None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"fraction must be within [0, 1], not {fraction}")
        # A float we produced ourselves (checked above), so it is safe to render into the SQL.
        super().__init__(expression, fraction=repr(float(fraction)))


@dataclass(frozen=True)
class DurationStats:
    count: int
    quantiles: dict[float, float | None]

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, **{f"p{round(q * 100)}": v for q, v in self.quantiles.items()}}


def duration_stats(
    runs: QuerySet[Run],
    start: str,
    end: str,
    *,
    quantiles: Iterable[float] = QUANTILES,
    in_database: bool | None = None,
) -> DurationStats:
    """Percentiles of `end - start` in seconds over `runs` where both are set. On PostgreSQL the
    database computes them (percentile_cont); elsewhere (SQLite) Python does, from the values."""
    quantiles = tuple(quantiles)
    runs = runs.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
    if in_database is None:
        in_database = connection.vendor == "postgresql"
    if in_database:
        duration = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
        aggregates: dict[str, Any] = {"n": Count("pk")}
        for index, q in enumerate(quantiles):
            aggregates[f"q{index}"] = _PercentileContSeconds(duration, fraction=q)
        row = runs.aggregate(**aggregates)
        return DurationStats(
            count=row["n"],
            quantiles={q: (float(row[f"q{i}"]) if row[f"q{i}"] is not None else None) for i, q in enumerate(quantiles)},
        )
    values = [(finish - begin).total_seconds() for begin, finish in runs.values_list(start, end)]
    return DurationStats(count=len(values), quantiles={q: percentile(values, q) for q in quantiles})


# --- the figures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeLoad:
    id: int
    name: str
    owner: str
    running: int
    max_concurrency: int
    active: bool

    @property
    def utilization(self) -> float:
        return self.running / self.max_concurrency if self.max_concurrency else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "running": self.running,
            "max_concurrency": self.max_concurrency,
            "utilization": self.utilization,
            "active": self.active,
        }


@dataclass(frozen=True)
class Metrics:
    scope: str  # "site" or "user"
    generated_at: dt.datetime
    window_seconds: int
    runs_by_state: dict[str, int]
    queue_wait: DurationStats
    run_duration: DurationStats
    nodes: list[NodeLoad] = field(default_factory=list)

    @property
    def runs_total(self) -> int:
        return sum(self.runs_by_state.values())

    @property
    def success_rate(self) -> float | None:
        """succeeded / (succeeded + failed + lost); None while no run has finished that way."""
        finished = sum(self.runs_by_state[state] for state in SUCCESS_DENOMINATOR)
        return self.runs_by_state[RunState.SUCCEEDED] / finished if finished else None

    @property
    def active_nodes(self) -> int:
        return sum(1 for node in self.nodes if node.active)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "generated_at": self.generated_at.isoformat(),
            "window_seconds": self.window_seconds,
            "runs": {
                "by_state": dict(self.runs_by_state),
                "total": self.runs_total,
                "success_rate": self.success_rate,
            },
            "queue_wait_seconds": self.queue_wait.as_dict(),
            "run_seconds": self.run_duration.as_dict(),
            "nodes": {
                "active": self.active_nodes,
                "registered": len(self.nodes),
                "utilization": [node.as_dict() for node in self.nodes],
            },
        }


def window_seconds() -> int:
    return int(getattr(settings, "REPROLAB_METRICS_WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS))


def compute_metrics(
    *, runs: QuerySet[Run], nodes: QuerySet[Node], scope: str = "site", now: dt.datetime | None = None
) -> Metrics:
    """The figures over `runs` and the (non-revoked) `nodes`."""
    now = now or timezone.now()
    window = window_seconds()
    counts = dict(runs.order_by().values_list("state").annotate(n=Count("pk")))
    by_state = {state.value: int(counts.get(state.value, 0)) for state in RunState}

    recent = runs.order_by().filter(finished_at__gte=now - dt.timedelta(seconds=window))
    queue_wait = duration_stats(recent, "created_at", "started_at")
    run_duration = duration_stats(recent, "started_at", "finished_at")

    live_nodes = list(nodes.filter(revoked_at__isnull=True).select_related("owner").order_by("name", "id"))
    running = dict(
        Run.objects.filter(node__in=[n.pk for n in live_nodes], state__in=ACTIVE_STATES)
        .order_by()
        .values_list("node_id")
        .annotate(n=Count("pk"))
    )
    active_since = now - dt.timedelta(seconds=settings.REPROLAB_NODE_ACTIVE_SECONDS)
    loads = [
        NodeLoad(
            id=node.pk,
            name=node.name,
            owner=node.owner.username,
            running=int(running.get(node.pk, 0)),
            max_concurrency=node.max_concurrency,
            active=node.last_seen_at is not None and node.last_seen_at >= active_since,
        )
        for node in live_nodes
    ]
    return Metrics(
        scope=scope,
        generated_at=now,
        window_seconds=window,
        runs_by_state=by_state,
        queue_wait=queue_wait,
        run_duration=run_duration,
        nodes=loads,
    )


def site_metrics(*, now: dt.datetime | None = None) -> Metrics:
    return compute_metrics(runs=Run.objects.all(), nodes=Node.objects.all(), scope="site", now=now)


def metrics_for(user: Any, *, now: dt.datetime | None = None) -> Metrics:
    """Staff see the site; anyone else the runs they may see and their own nodes."""
    if getattr(user, "is_staff", False) and user.is_active:
        return site_metrics(now=now)
    nodes = Node.objects.filter(owner=user) if user.is_authenticated else Node.objects.none()
    return compute_metrics(runs=runs_visible_to(user), nodes=nodes, scope="user", now=now)


# --- Prometheus text format ------------------------------------------------------------------------
def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int | None) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float | int | None, labels: dict[str, str] | None = None) -> None:
        rendered = ""
        if labels:
            rendered = "{" + ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items()) + "}"
        self.lines.append(f"{name}{rendered} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def prometheus_text(metrics: Metrics) -> str:
    out = _Exposition()
    out.family("reprolab_runs", "gauge", "Runs by state.")
    for state, count in metrics.runs_by_state.items():
        out.sample("reprolab_runs", count, {"state": state})
    out.family(
        "reprolab_run_success_ratio",
        "gauge",
        "Succeeded runs over succeeded, failed and lost runs (NaN while there are none).",
    )
    out.sample("reprolab_run_success_ratio", metrics.success_rate)
    hours = metrics.window_seconds / 3600
    for name, stats, what in (
        ("reprolab_queue_wait_seconds", metrics.queue_wait, "Time from submission to start"),
        ("reprolab_run_duration_seconds", metrics.run_duration, "Time from start to finish"),
    ):
        out.family(name, "gauge", f"{what} of runs finished in the last {hours:g} h, by quantile.")
        for q, value in stats.quantiles.items():
            out.sample(name, value, {"quantile": format_value(q)})
        out.family(f"{name}_runs", "gauge", f"Runs finished in the last {hours:g} h behind {name}.")
        out.sample(f"{name}_runs", stats.count)
    out.family("reprolab_nodes_active", "gauge", "Nodes seen recently and not revoked.")
    out.sample("reprolab_nodes_active", metrics.active_nodes)
    out.family("reprolab_node_utilization", "gauge", "Leased and running runs over max_concurrency, per node.")
    for node in metrics.nodes:
        out.sample("reprolab_node_utilization", node.utilization, {"node": node.name, "node_id": str(node.id)})
    return out.text()


# --- views -------------------------------------------------------------------------------------------
def _metrics_token_ok(request: HttpRequest) -> bool:
    expected = str(getattr(settings, "REPROLAB_METRICS_TOKEN", "") or "")
    offered = bearer_value(request)
    if not expected or offered is None:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


def prometheus_allowed(request: HttpRequest) -> bool:
    if settings.DEBUG or settings.REPROLAB_DEMO_ALLOWED:
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    return _metrics_token_ok(request)


@csrf_exempt  # it changes nothing; and a CSRF 403 to a POST would confirm that it exists
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics: site-wide figures for Prometheus; 404 unless allowed (see the module doc).
    Access is checked before the method, so a POST does not confirm the endpoint either."""
    if not prometheus_allowed(request):
        raise Http404("Not found.")
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    response = HttpResponse(prometheus_text(site_metrics()), content_type=PROMETHEUS_CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


class MetricsApi(APIView):
    """Run and node figures over what you can see (staff: the whole site)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(metrics_for(request.user).as_dict())
