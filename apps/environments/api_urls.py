from django.urls import path

from .api import ProjectEnvironmentView

urlpatterns = [
    path("projects/<slug:slug>/environment/", ProjectEnvironmentView.as_view(), name="api-project-environment"),
]
