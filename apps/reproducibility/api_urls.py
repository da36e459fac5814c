from django.urls import path

from . import api

urlpatterns = [
    path("agent/runs/<id:run_id>/environment/", api.AgentEnvironmentApi.as_view(), name="agent-run-environment"),
    path("runs/<id:run_id>/environment/", api.RunEnvironmentApi.as_view(), name="api-run-environment"),
    path("runs/<id:run_id>/environment/diff/", api.RunEnvironmentDiffApi.as_view(), name="api-run-environment-diff"),
    path("runs/<id:run_id>/reproduce/", api.ReproduceApi.as_view(), name="api-run-reproduce"),
    path("reproductions/<id:reproduction_id>/", api.ReproductionApi.as_view(), name="api-reproduction"),
    path("runs/<id:run_id>/lineage/", api.RunLineageApi.as_view(), name="api-run-lineage"),
    path("runs/<id:run_id>/crate.zip", api.RunCrateApi.as_view(), name="api-run-crate"),
]
