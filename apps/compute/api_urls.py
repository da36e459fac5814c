from django.urls import path
from rest_framework.routers import SimpleRouter

from . import agent_api, agent_views, api, metrics

router = SimpleRouter()
router.register("nodes", api.NodeViewSet, basename="api-node")
router.register("runs", api.RunViewSet, basename="api-run")

R = "agent/runs/<id:run_id>"

urlpatterns = [
    *router.urls,
    path("metrics/", metrics.MetricsApi.as_view(), name="api-metrics"),
    path("agent/hello/", agent_api.AgentHelloApi.as_view(), name="agent-hello"),
    path("agent/claim/", agent_views.agent_claim, name="agent-claim"),
    path(f"{R}/notebook/", agent_api.AgentNotebookApi.as_view(), name="agent-run-notebook"),
    path(f"{R}/files/<str:sha256>/", agent_api.AgentFileApi.as_view(), name="agent-run-file"),
    path(f"{R}/heartbeat/", agent_api.AgentHeartbeatApi.as_view(), name="agent-run-heartbeat"),
    path(f"{R}/events/", agent_api.AgentEventsApi.as_view(), name="agent-run-events"),
    path(f"{R}/output/", agent_api.AgentOutputApi.as_view(), name="agent-run-output"),
    path(f"{R}/artifacts/<path:path>", agent_api.AgentArtifactApi.as_view(), name="agent-run-artifact"),
    path(f"{R}/complete/", agent_api.AgentCompleteApi.as_view(), name="agent-run-complete"),
    path(f"{R}/release/", agent_api.AgentReleaseApi.as_view(), name="agent-run-release"),
]
