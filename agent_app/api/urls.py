"""Routes of the original specification's API, at the paths its curl examples use."""

from django.urls import path

from agent_app.api import views

urlpatterns = [
    path("select_replica", views.SelectReplicaView.as_view(), name="select_replica"),
    path("record_experience", views.RecordExperienceView.as_view(), name="record_experience"),
    path("train", views.TrainView.as_view(), name="train"),
    path("save_model", views.SaveModelView.as_view(), name="save_model"),
    path("stats", views.StatsView.as_view(), name="stats"),
    path("model/weights", views.ModelWeightsView.as_view(), name="model_weights"),
    path("ab_results", views.AbResultsView.as_view(), name="ab_results"),
    path("health", views.HealthView.as_view(), name="health"),
    path("ready", views.ReadyView.as_view(), name="ready"),
]
