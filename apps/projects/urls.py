from django.urls import path

from . import views

app_name = "projects"

P = "p/<slug:slug>"

urlpatterns = [
    path("", views.project_list, name="list"),
    path("projects/new/", views.project_create, name="create"),
    path(f"{P}/", views.project_detail, name="detail"),
    path(f"{P}/-/upload/", views.notebook_upload, name="notebook-upload"),
    path(f"{P}/-/environment/", views.project_environment, name="environment"),
    path(f"{P}/-/datasets/new/", views.dataset_create, name="dataset-create"),
    path(f"{P}/-/members/", views.member_add, name="member-add"),
    path(f"{P}/-/members/<str:username>/remove/", views.member_remove, name="member-remove"),
    path(f"{P}/-/render/<id:version_id>/", views.notebook_render, name="notebook-render"),
    path(f"{P}/-/download/<id:version_id>/", views.notebook_download, name="notebook-download"),
    path(f"{P}/notebooks/<path:path>", views.notebook_detail, name="notebook"),
    path(f"{P}/datasets/<slug:name>/", views.dataset_detail, name="dataset"),
    path(f"{P}/datasets/<slug:name>/v<id:number>/<path:path>", views.dataset_file_download, name="dataset-file"),
]
