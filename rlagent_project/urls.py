"""URL routes: the specification's API at the root, plus admin, OpenAPI schema and Prometheus metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from agent_app.metrics import metrics_view

urlpatterns = [
    path("", include("agent_app.api.urls")),
    path("admin/dashboard/", include("agent_app.dashboard.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # django-prometheus's metrics plus the agent's, behind a staff session, an API key or METRICS_OPEN.
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]
