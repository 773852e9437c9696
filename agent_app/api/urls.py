"""Routes of the seed's API, at the paths the seed's curl examples use."""

from django.urls import path

from agent_app.api import views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
]
