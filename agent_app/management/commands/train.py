"""python manage.py train --iterations 5000: train now from the shell, with a progress bar."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from agent_app.services import training


class Command(BaseCommand):
    help = "Train the agent on the shared replay store now (takes the training lease per chunk)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--iterations", type=int, default=1000, help="gradient steps (default 1000)")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="default: the admin's batch size, else TRAINING_BATCH_SIZE")
        parser.add_argument("--chunk", type=int, default=100, help="steps per published update")

    def handle(self, *args, iterations: int, batch_size: int | None, chunk: int, **options) -> None:
        if iterations < 1 or chunk < 1 or (batch_size is not None and batch_size < 1):
            raise CommandError("--iterations, --batch-size and --chunk must be positive")
        done, started, result = 0, time.monotonic(), None
        while done < iterations:
            step = min(chunk, iterations - done)
            try:
                result = training.train(batch_size=batch_size, iterations=step)
            except training.TrainingRefused as exc:
                raise CommandError(str(exc)) from None
            done += result["iterations"]  # fewer than asked when the run's time budget cut it short
            self._progress(done, iterations, started, result)
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(
            f"trained {iterations} steps: steps_done={result['steps_done']} loss={_loss(result)} "
            f"epsilon={result['epsilon']:.4f} model v{result['model_version']}"
        ))

    def _progress(self, done: int, total: int, started: float, result: dict) -> None:
        width = 30
        filled = width * done // total
        rate = done / max(time.monotonic() - started, 1e-9)
        self.stdout.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps "
            f"{rate:,.0f} steps/s loss {_loss(result)} epsilon {result['epsilon']:.4f}", ending=""
        )
        self.stdout.flush()


def _loss(result: dict) -> str:
    # The loss is None when it was not finite: exactly when the operator most needs to see it.
    return "not finite" if result["loss"] is None else f"{result['loss']:.5f}"
