"""The dashboard page (staff only) and its two buttons: train now, save a checkpoint now.

The page shows one pool, `?pool=` (the default pool when none is named); its figures, charts and
buttons are that pool's."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agent_app.dashboard.charts import Chart, line_chart, number, percent
from agent_app.dashboard.history import samples
from agent_app.dashboard.pools import chosen_pool, of_pool, pool_query
from agent_app.models import AgentConfig, MetricSample
from agent_app.pools import pool_names, pool_scope
from agent_app.replay import StoreUnavailable
from agent_app.services import dispatch, stats
from agent_app.services.refusals import TrainingRefused, TrainingTimeout, TrainingUnavailable
from agent_app.serving import policy_cache

log = logging.getLogger(__name__)
REFRESH_SECONDS = 10
OPERATE = "agent_app.change_agentconfig"  # who may start training or a checkpoint


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    pool = chosen_pool(request.GET)
    with pool_scope(pool):
        history = samples()
        figures = stats.agent_stats()
        ab = ab_comparison()
    context = {
        "pool": pool,
        "pool_query": pool_query(pool),
        "stats": figures,
        "figures": headline(figures),
        "serving": policy_cache.snapshot_for(pool),
        "charts": charts(history),
        "samples": len(history),
        "last_sample": history[-1] if history else None,
        "ab": ab,
        "refresh_seconds": REFRESH_SECONDS,
        "can_operate": request.user.has_perm(OPERATE),
        "default_iterations": settings.TRAINING_ITERATIONS,
    }
    if request.GET.get("partial"):  # the page's own refresh fetches just the body
        return render(request, "agent_app/dashboard_body.html", context)
    pools = pool_names()
    title = "RL agent dashboard" if len(pools) == 1 else f"RL agent dashboard: pool {pool}"
    return render(request, "agent_app/dashboard.html",
                  {**admin.site.each_context(request), "title": title, "pools": pools, **context})


def headline(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, label, text) of the figure cards, from agent_stats()."""
    buffer = figures["buffer_size"]
    return [
        ("epsilon", "Epsilon", f"{figures['epsilon']:.4f}"),
        ("exploration", "Exploration", "on" if figures["exploration"] else "off"),
        ("model-version", "Model version", f"v{figures['model_version']}"),
        ("steps", "Training steps", str(figures["steps_done"])),
        ("buffer", "Replay buffer", "unavailable" if buffer is None else str(buffer)),
        ("reward", "Avg recent reward", number(figures["avg_recent_reward"], 4)),
        ("loss", "Last loss", number(figures["last_loss"], 5)),
        ("target-syncs", "Target syncs", str(figures["target_syncs"])),
        ("device", "Device", figures["device"]),
    ]


def charts(history: list[MetricSample]) -> list[Chart]:
    times = [s.created_at for s in history]
    names = settings.REPLICA_NAMES

    def per_replica(attr: str) -> dict[str, list[float | None]]:
        return {name: [getattr(s, attr).get(name) for s in history] for name in names}

    return [
        line_chart("Average reward (last 100 experiences)", times,
                   {"reward": [s.avg_reward for s in history]}),
        line_chart("Training loss", times, {"loss": [s.loss for s in history]}),
        line_chart("Epsilon", times, {"epsilon": [s.epsilon for s in history]}, y_range=(0.0, 1.0)),
        line_chart("Latency by replica (ms, recent experiences)", times, per_replica("latency_by_replica"),
                   fmt=lambda v: number(v, 1)),
        line_chart("Share of traffic per replica", times, per_replica("share_by_replica"),
                   fmt=percent, y_range=(0.0, 1.0)),
        line_chart("Fallback and exploration rates", times,
                   {"fallback (least-loaded)": [s.fallback_rate for s in history],
                    "exploration": [s.exploration_rate for s in history]},
                   fmt=percent, y_range=(0.0, 1.0)),
    ]


def ab_comparison() -> dict[str, Any] | None:
    """The A/B results when the service provides them and any arm has traffic."""
    ab_results = getattr(stats, "ab_results", None)
    if not callable(ab_results):
        return None
    try:
        data = ab_results()
    except StoreUnavailable as exc:
        log.warning("dashboard without A/B results: %s", exc)
        return None
    if not data or not data.get("arms"):
        return None
    columns = sorted({key for arm in data["arms"].values() for key in arm})
    rows = [(arm, [_cell(figures.get(c)) for c in columns]) for arm, figures in sorted(data["arms"].items())]
    comparison = data.get("comparison") or {}
    title = f"{comparison.get('candidate', 'candidate')} minus {comparison.get('baseline', 'baseline')}"
    details = [(key, _cell(v)) for key, v in comparison.items() if key not in ("baseline", "candidate")]
    return {"columns": [c.replace("_", " ") for c in columns], "rows": rows, "comparison_title": title,
            "comparison": [(key.replace("_", " "), text) for key, text in details]}


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, int | float):
        return number(float(value), 4)
    if isinstance(value, list | tuple):
        return " … ".join(_cell(v) for v in value)
    return str(value)


def _back(pool: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("agent_dashboard") + pool_query(pool))


@require_POST
@staff_member_required
@permission_required(OPERATE, raise_exception=True)
def train_now(request: HttpRequest) -> HttpResponse:
    """One training run of the page's pool on the training worker, its outcome as a message."""
    pool = chosen_pool(request.POST)
    try:
        iterations = int(request.POST.get("iterations") or settings.TRAINING_ITERATIONS)
    except ValueError:
        iterations = 0
    if not 1 <= iterations <= 10_000:
        messages.error(request, "Iterations must be a whole number between 1 and 10000.")
        return _back(pool)
    batch_size = AgentConfig.load(pool).batch_size or settings.TRAINING_BATCH_SIZE
    try:
        result = dispatch.request_training(batch_size=batch_size, iterations=iterations, pool=pool)
    except TrainingTimeout as exc:
        messages.warning(request, f"Training queued: {exc}.")
    except TrainingUnavailable as exc:
        messages.error(request, f"Training impossible: {exc}.")
    except TrainingRefused as exc:
        messages.warning(request, f"Training refused: {exc}.")
    else:
        cut_short = " (its time budget ran out)" if result["time_limited"] else ""
        messages.success(
            request,
            f"Trained {result['iterations']} step(s){of_pool(pool)}{cut_short}: "
            f"model v{result['model_version']}, {result['steps_done']} steps, "
            f"loss {number(result['loss'], 5)}, epsilon {result['epsilon']:.4f}, "
            f"{result['buffer_size']} experiences in the buffer.",
        )
    return _back(pool)


@require_POST
@staff_member_required
@permission_required(OPERATE, raise_exception=True)
def checkpoint_now(request: HttpRequest) -> HttpResponse:
    pool = chosen_pool(request.POST)
    try:
        result = dispatch.request_checkpoint(pool=pool)
    except TrainingTimeout as exc:
        messages.warning(request, f"Checkpoint queued: {exc}.")
    except TrainingRefused as exc:
        messages.warning(request, f"Checkpoint refused: {exc}.")
    else:
        where = result.get("versioned_path", result["path"])
        messages.success(request, f"Checkpoint v{result['version']}{of_pool(pool)} written at "
                                  f"{result['steps_done']} steps to {where}.")
    return _back(pool)
