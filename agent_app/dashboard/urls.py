"""Dashboard routes, mounted under /admin/dashboard/ (before the admin's own URLs)."""

from django.urls import path

from agent_app.dashboard import views

urlpatterns = [
    path("", views.dashboard, name="agent_dashboard"),
    path("train", views.train_now, name="agent_dashboard_train"),
    path("checkpoint", views.checkpoint_now, name="agent_dashboard_checkpoint"),
]
