from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.compute import agent_dist, metrics
from apps.core.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics.prometheus_metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Split: its script is a file of its own (?script), so the page runs under the site's CSP.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html"),
        name="api-docs",
    ),
    path("api/v1/", include("apps.accounts.api_urls")),
    path("api/v1/", include("apps.projects.api_urls")),
    path("api/v1/", include("apps.compute.api_urls")),
    path("api/v1/", include("apps.reproducibility.api_urls")),
    path("api/v1/", include("apps.review.api_urls")),
    path("api/v1/", include("apps.environments.api_urls")),
    path("api/v1/", include("apps.courses.api_urls")),
    # The node agent as a wheel, so `pip install <site>/agent/<wheel>` needs no package index.
    path("agent/", agent_dist.agent_index, name="agent-index"),
    path("agent/<str:filename>", agent_dist.agent_wheel, name="agent-wheel"),
    path("accounts/", include("apps.accounts.urls")),
    path("", include("apps.compute.urls")),
    path("", include("apps.reproducibility.urls")),
    path("", include("apps.review.urls")),
    path("", include("apps.courses.urls")),
    path("", include("apps.projects.urls")),
]

# A body over Django's request limits (too many files): JSON 413 for the API, a readable page.
handler400 = "apps.core.uploads.bad_request"
# An API path that matches no route answers JSON, like every other API error.
handler404 = "apps.core.exceptions.api_not_found"
