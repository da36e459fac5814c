from typing import Any

from django.urls import path

from .api import (
    DatasetVersionViewSet,
    DatasetViewSet,
    MembershipViewSet,
    NotebookVersionViewSet,
    NotebookViewSet,
    ProjectViewSet,
)

LIST: dict[str, Any] = {"get": "list", "post": "create"}
DETAIL: dict[str, Any] = {"get": "retrieve", "patch": "partial_update", "put": "update", "delete": "destroy"}

P = "projects/<slug:slug>"

urlpatterns = [
    path("projects/", ProjectViewSet.as_view(LIST), name="api-project-list"),
    path(f"{P}/", ProjectViewSet.as_view(DETAIL), name="api-project-detail"),
    path(f"{P}/members/", MembershipViewSet.as_view(LIST), name="api-member-list"),
    path(
        f"{P}/members/<str:username>/",
        MembershipViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="api-member-detail",
    ),
    path(f"{P}/notebooks/", NotebookViewSet.as_view(LIST), name="api-notebook-list"),
    path(f"{P}/notebooks/<id:notebook_id>/", NotebookViewSet.as_view({"get": "retrieve"}), name="api-notebook-detail"),
    path(
        f"{P}/notebooks/<id:notebook_id>/versions/",
        NotebookViewSet.as_view({"get": "versions"}),
        name="api-notebook-versions",
    ),
    path(
        f"{P}/notebooks/<id:notebook_id>/versions/<id:number>/",
        NotebookVersionViewSet.as_view({"get": "retrieve"}),
        name="api-notebook-version-detail",
    ),
    path(
        f"{P}/notebooks/<id:notebook_id>/versions/<id:number>/datacite/",
        NotebookVersionViewSet.as_view({"get": "datacite"}),
        name="api-notebook-version-datacite",
    ),
    path(
        f"{P}/notebooks/<id:notebook_id>/versions/<id:number>/download/",
        NotebookVersionViewSet.as_view({"get": "download"}),
        name="api-notebook-version-download",
    ),
    path(f"{P}/datasets/", DatasetViewSet.as_view(LIST), name="api-dataset-list"),
    path(f"{P}/datasets/<slug:name>/", DatasetViewSet.as_view({"get": "retrieve"}), name="api-dataset-detail"),
    path(f"{P}/datasets/<slug:name>/versions/", DatasetVersionViewSet.as_view(LIST), name="api-dataset-versions"),
    path(
        f"{P}/datasets/<slug:name>/versions/<id:number>/",
        DatasetVersionViewSet.as_view({"get": "retrieve"}),
        name="api-dataset-version-detail",
    ),
    path(
        f"{P}/datasets/<slug:name>/versions/<id:number>/download/",
        DatasetVersionViewSet.as_view({"get": "download"}),
        name="api-dataset-file-download",
    ),
]
