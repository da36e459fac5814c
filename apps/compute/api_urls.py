from django.urls import path
from rest_framework.routers import SimpleRouter

from . import agent_views, api, metrics

router = SimpleRouter()
router.register("nodes", api.NodeViewSet, basename="api-node")
router.register("runs", api.RunViewSet, basename="api-run")

R = "agent/runs/<id:run_id>"

urlpatterns = [
    *router.urls,
    path("metrics/", metrics.MetricsApi.as_view(), name="api-metrics"),
    path("agent/hello/", api.AgentHelloApi.as_view(), name="agent-hello"),
    path("agent/claim/", agent_views.agent_claim, name="agent-claim"),
    path(f"{R}/notebook/", api.AgentNotebookApi.as_view(), name="agent-run-notebook"),
    path(f"{R}/files/<str:sha256>/", api.AgentFileApi.as_view(), name="agent-run-file"),
    path(f"{R}/heartbeat/", api.AgentHeartbeatApi.as_view(), name="agent-run-heartbeat"),
    path(f"{R}/events/", api.AgentEventsApi.as_view(), name="agent-run-events"),
    path(f"{R}/output/", api.AgentOutputApi.as_view(), name="agent-run-output"),
    path(f"{R}/artifacts/<path:path>", api.AgentArtifactApi.as_view(), name="agent-run-artifact"),
    path(f"{R}/complete/", api.AgentCompleteApi.as_view(), name="agent-run-complete"),
    path(f"{R}/release/", api.AgentReleaseApi.as_view(), name="agent-run-release"),
]
