"""Test settings: real Postgres and Redis when reachable (or required), SQLite otherwise.

TEST_BACKENDS=auto (default) probes 127.0.0.1; =real fails unless both answer (CI);
=embedded forces SQLite and no Redis. Explicit DATABASE_URL / REDIS_HOST always win.
"""

import os
import socket
import tempfile


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


_mode = os.environ.get("TEST_BACKENDS", "auto")
if _mode not in ("auto", "real", "embedded"):
    raise SystemExit(f"TEST_BACKENDS={_mode!r}: expected auto, real or embedded")
if _mode != "embedded":
    _pg, _redis = _reachable(5432), _reachable(6379)
    if _mode == "real" and not (_pg and _redis):
        raise SystemExit(
            f"TEST_BACKENDS=real but Postgres reachable={_pg}, Redis reachable={_redis} on 127.0.0.1"
        )
    if _pg:
        os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    if _redis:
        os.environ.setdefault("REDIS_HOST", "127.0.0.1")
        os.environ.setdefault("REDIS_DB", "15")  # a database of its own, flushed by the tests
# Concurrent runs on one machine must not share keys or a test database; nor may pytest-xdist's
# workers (make test-fast), which inherit what their controller set here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("REDIS_KEY_PREFIX", "DATA_DIR", "MODEL_PATH"):
        os.environ.pop(_name, None)
os.environ.setdefault("REDIS_KEY_PREFIX", f"rlagent-test-{os.getpid()}:")
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 40)
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="rlagent-test-"))
os.environ.setdefault("MODEL_PATH", os.path.join(os.environ["DATA_DIR"], "models", "rl_agent.pth"))

from rlagent_project.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# Tasks run in the test process; the Celery integration tests start a real worker and beat.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
# Most tests check the original specification's contract: its fixed network, with the model routing
# as soon as it has trained. The per-replica network's and the gate's tests turn them on; the live
# tests (tests/live/) run the production defaults.
RL_ROUTING_GATE = False
RL_NETWORK = "mlp"
# Refresh the serving snapshot on every call, so a test sees its own writes at once.
POLICY_SYNC_THREAD = False
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405  (whitenoise warns about a missing one)
if "postgresql" in DATABASES["default"]["ENGINE"]:  # noqa: F405  (SQLite tests run in memory)
    DATABASES["default"]["TEST"] = {"NAME": f"test_rlagent_{os.getpid()}"}  # noqa: F405
