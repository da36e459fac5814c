from django.urls import path

from . import api

urlpatterns = [
    path("agent/runs/<int:run_id>/environment/", api.AgentEnvironmentApi.as_view(), name="agent-run-environment"),
    path("runs/<int:run_id>/environment/", api.RunEnvironmentApi.as_view(), name="api-run-environment"),
    path("runs/<int:run_id>/environment/diff/", api.RunEnvironmentDiffApi.as_view(), name="api-run-environment-diff"),
]
