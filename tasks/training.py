"""Training, target-sync and checkpoint tasks for the `training` queue."""
