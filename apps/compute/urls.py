"""Pages for nodes and runs, and the run form's target on a notebook page."""

from django.urls import path

from . import views

app_name = "compute"

urlpatterns = [
    path("nodes/", views.node_list, name="nodes"),
    path("nodes/new/", views.node_create, name="node-create"),
    path("nodes/<id:pk>/", views.node_detail, name="node"),
    path("nodes/<id:pk>/rotate-token/", views.node_rotate_token, name="node-rotate-token"),
    path("nodes/<id:pk>/revoke/", views.node_revoke, name="node-revoke"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<id:pk>/", views.run_detail, name="run"),
    path("runs/<id:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<id:pk>/render/", views.run_render, name="run-render"),
    path("p/<slug:slug>/-/run/<id:version_id>/", views.run_submit, name="run-submit"),
]
