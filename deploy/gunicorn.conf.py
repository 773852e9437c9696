"""Gunicorn settings shared by `make run` and docker-compose; PORT and WEB_CONCURRENCY from env."""

import os
import shutil
import tempfile

# Each sync worker serves one request at a time with a tiny MLP: BLAS/OpenMP thread pools only
# contend with the other workers for the cores (measured: ~50% more select_replica throughput).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 60
accesslog = "-"

# Prometheus multiprocess mode: every worker writes its counters to files in this folder and
# /metrics sums them, so a scrape sees all the workers, not whichever one answered. Set before
# any worker imports prometheus_client; one folder per data dir (or port) so stacks never mix.
_port = os.environ.get("PORT", "5000")
_data_dir = os.environ.get("DATA_DIR") or os.path.join(tempfile.gettempdir(), f"rlagent-{_port}")
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(_data_dir, "prometheus-multiproc")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    """Master start: files of a previous run would add their old counts to the new ones."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker):
    """A dead worker's live gauges leave the sum; its counters stay (counters never go down)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
