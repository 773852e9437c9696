"""Django settings: every knob is read here, once, from the environment (docs/configuration.md has the table).

With no environment at all the service runs "embedded": SQLite, a filesystem Celery broker and
files under ./var. Setting DATABASE_URL and/or REDIS_HOST switches to Postgres and Redis.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from rlagent_project.env import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Mode -------------------------------------------------------------------------------
# Local state (SQLite file, broker folders, generated secret, checkpoints in embedded mode).
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()
# Redis hostname. Unset means "no Redis" (embedded mode); docker-compose sets the specification's `redis`.
REDIS_HOST = env_str("REDIS_HOST", "")
REDIS_PORT = env_int("REDIS_PORT", 6379, minimum=1, maximum=65535)
REDIS_DB = env_int("REDIS_DB", 0, minimum=0, maximum=15)
# Prefix of every key the service writes, so one Redis can serve several deployments.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "rlagent:")
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}" if REDIS_HOST else ""
DATABASE_URL = env_str("DATABASE_URL", "")
EMBEDDED = not (REDIS_HOST or DATABASE_URL)

# --- Core Django ------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Signs sessions and decision_id tokens; every process of one deployment needs the same key.
SECRET_KEY = env_str("SECRET_KEY", "")
if not (SECRET_KEY or EMBEDDED or DEBUG):
    raise ImproperlyConfigured(
        "Environment variable SECRET_KEY is required when DATABASE_URL or REDIS_HOST is set."
    )
# Embedded mode without SECRET_KEY: a random key kept in this file, so the web, worker and beat
# processes sign with the same one. Importing settings writes nothing: the first process to start
# generates the file (rlagent_project/local_files.py, from AgentAppConfig.ready), the others read it.
SECRET_KEY_FILE = None if SECRET_KEY else DATA_DIR / "secret_key"
if SECRET_KEY_FILE is not None and SECRET_KEY_FILE.exists():
    SECRET_KEY = SECRET_KEY_FILE.read_text().strip()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_prometheus",
    "django_celery_beat",
    "axes",
    "agent_app",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Admin brute-force protection: AXES_FAILURE_LIMIT failed logins for one username from one
# address lock that pair out for AXES_COOLOFF_MINUTES (a success resets the count).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_MINUTES = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = AXES_COOLOFF_MINUTES / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

ROOT_URLCONF = "rlagent_project.urls"
WSGI_APPLICATION = "rlagent_project.wsgi.application"
APPEND_SLASH = False  # the specification's paths have no trailing slash; POSTs must not be redirected

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Postgres when DATABASE_URL is set, else SQLite under DATA_DIR.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL or f"sqlite:///{DATA_DIR / 'db.sqlite3'}", conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # An unreachable host fails a request in seconds (a 503), not after the OS's TCP timeout.
    DATABASES["default"]["OPTIONS"] = {"connect_timeout": 3}
# SQLite shared by every web worker, the training worker and beat. WAL lets them read while one
# writes. A transaction that reads and then writes would fail at once ("database is locked") when
# another connection committed in between: busy_timeout does not apply to that lock upgrade.
# IMMEDIATE takes the write lock at BEGIN instead, so a writer waits its turn (up to `timeout`
# seconds). synchronous=NORMAL keeps each lock short: in WAL mode a commit survives a crash of any
# process; only a power loss or an OS crash can undo the last commits, never corrupt the file.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Largest accepted request body; larger ones get 413 (batch reports are the biggest bodies).
MAX_BODY_BYTES = env_int("MAX_BODY_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES

# --- Security (check --deploy is clean with DEBUG off) -----------------------------------
# The API is plain HTTP on port 5000 behind the gateway, as in the specification; TLS is terminated in
# front of it. Set SECURE_SSL_REDIRECT=true when the service is exposed directly over HTTPS.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
# W008 asks for an HTTPS redirect, which would break the specification's plain-HTTP API (see above).
SILENCED_SYSTEM_CHECKS = [] if SECURE_SSL_REDIRECT else ["security.W008"]

# --- REST framework and OpenAPI ---------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["agent_app.api.parsers.BoundedJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["agent_app.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["agent_app.api.auth.ApiKeyOrOpenEndpoint"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "agent_app.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RL Agent Service",
    "DESCRIPTION": "Deep Q-Network replica selection for LLM gateways.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # 3.1 (JSON Schema 2020-12): the state vector's per-position bounds need `prefixItems`.
    "OAS_VERSION": "3.1.0",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums", "agent_app.api.schema.require_request_bodies",
        "agent_app.api.schema.single_report_excludes_batch",
    ],
}

# --- The agent (the original specification's variables first) -------------------------
# Prometheus queried for the host's memory and CPU use; the host itself is read when it fails.
PROMETHEUS_URL = env_str("PROMETHEUS_URL", "http://prometheus:9090")
# Checkpoint path. The specification's /models/rl_agent.pth, or under DATA_DIR in embedded mode.
MODEL_PATH = Path(
    env_str("MODEL_PATH", str(DATA_DIR / "models" / "rl_agent.pth") if EMBEDDED else "/models/rl_agent.pth")
)
# Number of LLM replicas N (state has N + 7 values). The specification says 2 but describes 3; 3 it is.
NUM_REPLICAS = env_int("NUM_REPLICAS", 3, minimum=2, maximum=64)
# Names returned as replica_name, comma-separated; replica-1..replica-N by default.
REPLICA_NAMES = env_list("REPLICA_NAMES", [f"replica-{i + 1}" for i in range(NUM_REPLICAS)])
if len(REPLICA_NAMES) != NUM_REPLICAS:
    raise ImproperlyConfigured(
        f"Environment variable REPLICA_NAMES has {len(REPLICA_NAMES)} names but NUM_REPLICAS={NUM_REPLICAS}."
    )
# Epsilon-greedy exploration; false is pure exploitation (the admin can override it at run time).
RL_EXPLORATION = env_bool("RL_EXPLORATION", True)
# Torch device for training: cpu, cuda or auto (cuda when available).
RL_DEVICE = env_choice("RL_DEVICE", "auto", ("auto", "cpu", "cuda"))
# Replay store: redis (needs REDIS_HOST) or database; redis whenever Redis is configured.
REPLAY_STORE = env_choice("REPLAY_STORE", "redis" if REDIS_HOST else "database", ("redis", "database"))
if REPLAY_STORE == "redis" and not REDIS_HOST:
    raise ImproperlyConfigured("Environment variable REPLAY_STORE=redis needs REDIS_HOST to be set.")
REPLAY_CAPACITY = env_int("REPLAY_CAPACITY", 10_000, minimum=64)
# Seconds between scheduled training runs (the specification's 60).
TRAINING_INTERVAL_SECONDS = env_float("TRAINING_INTERVAL_SECONDS", 60.0, minimum=1.0)
# Samples per gradient step. 256, not the specification's 64: latency rewards are heavy-tailed and
# noisy, and on the simulator 64 gave -19.7% mean latency vs least-loaded, 256 gave -24.0%.
TRAINING_BATCH_SIZE = env_int("TRAINING_BATCH_SIZE", 256, minimum=1, maximum=4096)
# A scheduled run takes TRAINING_STEPS_PER_EXPERIENCE gradient steps per experience reported
# since the last run (0.5 measured best on the simulator), at least TRAINING_ITERATIONS and at
# most TRAINING_MAX_ITERATIONS: training keeps pace with traffic instead of one step a minute.
TRAINING_ITERATIONS = env_int("TRAINING_ITERATIONS", 1, minimum=1, maximum=100_000)
TRAINING_STEPS_PER_EXPERIENCE = env_float("TRAINING_STEPS_PER_EXPERIENCE", 0.5, minimum=0.0, maximum=100.0)
TRAINING_MAX_ITERATIONS = env_int("TRAINING_MAX_ITERATIONS", 1000, minimum=1, maximum=100_000)
# Gradient steps between target-network syncs and between checkpoints; checkpoints kept.
TARGET_SYNC_STEPS = env_int("TARGET_SYNC_STEPS", 100, minimum=1)
CHECKPOINT_EVERY_STEPS = env_int("CHECKPOINT_EVERY_STEPS", 500, minimum=1)
CHECKPOINT_KEEP = env_int("CHECKPOINT_KEEP", 5, minimum=1)
# Gradient steps a model needs before it routes; until then least-loaded decides (and says so).
RL_MIN_TRAINING_STEPS = env_int("RL_MIN_TRAINING_STEPS", 100, minimum=0)
# Who routes (docs/design.md, decision 14): the heuristic until the model's own decisions, a
# RL_TRIAL_FRACTION of the traffic, are measured better on live traffic (2 standard errors over
# RL_GATE_WINDOW_SECONDS); then the model, with RL_HOLDOUT_FRACTION still routed by the heuristic
# so a model that gets worse hands back. false: the model routes as soon as it has
# RL_MIN_TRAINING_STEPS (the original specification's behaviour).
RL_ROUTING_GATE = env_bool("RL_ROUTING_GATE", True)
RL_TRIAL_FRACTION = env_float("RL_TRIAL_FRACTION", 0.1, minimum=0.0, maximum=1.0)
RL_HOLDOUT_FRACTION = env_float("RL_HOLDOUT_FRACTION", 0.05, minimum=0.0, maximum=1.0)
# "block": time is cut into blocks of RL_GATE_BLOCK_SECONDS, one arm routes a whole block (the
# model a share of blocks) and the verdict compares block mean rewards, RL_GATE_MIN_BLOCKS settled
# blocks a side; each arm is judged at full share. "request": each request's arm drawn at random
# and per-request mean rewards compared, RL_GATE_MIN_OUTCOMES a side; the model's few requests
# then ride on a cluster the heuristic keeps balanced, which flatters it.
RL_GATE_ASSIGNMENT = env_choice("RL_GATE_ASSIGNMENT", "block", ("block", "request"))
# Several times a request's latency, so most requests of a block meet a cluster its own arm shaped.
RL_GATE_BLOCK_SECONDS = env_int("RL_GATE_BLOCK_SECONDS", 60, minimum=5, maximum=3600)
RL_GATE_MIN_BLOCKS = env_int("RL_GATE_MIN_BLOCKS", 8, minimum=2)
# 100 a side in 30 minutes: at a 10 % trial that is 1 000 requests, so a cluster serving 1 request
# per second can still switch (with 200 in 10 minutes one below 3.3 requests/s never could).
RL_GATE_MIN_OUTCOMES = env_int("RL_GATE_MIN_OUTCOMES", 100, minimum=1)
# Blocks need hours: 8 model blocks of 60 s at a 10 % trial are 80 minutes of traffic, 8 heuristic
# blocks at a 5 % holdout 160 minutes.
RL_GATE_WINDOW_SECONDS = env_float("RL_GATE_WINDOW_SECONDS", 10_800.0 if RL_GATE_ASSIGNMENT == "block"
                                   else 1800.0, minimum=10.0, maximum=86_400.0)


def _check_gate_window() -> None:
    """Under block assignment the window must hold RL_GATE_MIN_BLOCKS blocks of the smaller non-zero
    share, or the gate could never decide."""
    shares = [share for share in (RL_TRIAL_FRACTION, RL_HOLDOUT_FRACTION) if share > 0]
    if not shares:
        return
    needed = RL_GATE_MIN_BLOCKS * RL_GATE_BLOCK_SECONDS / min(shares)
    if RL_GATE_WINDOW_SECONDS < needed:
        raise ImproperlyConfigured(
            f"Environment variable RL_GATE_WINDOW_SECONDS={RL_GATE_WINDOW_SECONDS:g} is too short for "
            f"RL_GATE_ASSIGNMENT=block: RL_GATE_MIN_BLOCKS={RL_GATE_MIN_BLOCKS} blocks of "
            f"RL_GATE_BLOCK_SECONDS={RL_GATE_BLOCK_SECONDS} at the smaller share (RL_TRIAL_FRACTION="
            f"{RL_TRIAL_FRACTION:g}, RL_HOLDOUT_FRACTION={RL_HOLDOUT_FRACTION:g}) need at least "
            f"{RL_GATE_MIN_BLOCKS} x {RL_GATE_BLOCK_SECONDS} / {min(shares):g} = {needed:g} seconds.")


if RL_GATE_ASSIGNMENT == "block":
    _check_gate_window()
# The heuristic that routes when the model does not (the gate's heuristic arm, and the fallback):
# "scorer" weighs each replica's queue, KV-cache headroom and prefix match (agent_app/rl/scorer.py)
# and is exactly least-loaded when only loads are known; "least_loaded" ignores everything else.
RL_HEURISTIC = env_choice("RL_HEURISTIC", "scorer", ("scorer", "least_loaded"))
# With the gate on, exploration picks among replicas whose Q is within this of the best (reward units).
RL_EXPLORATION_MARGIN = env_float("RL_EXPLORATION_MARGIN", 0.5, minimum=0.0)
# With the gate on, the model chooses only among the replicas the scorer (agent_app/rl/scorer.py)
# rates within this many points of its best (a full prefix match is worth 4, the shortest queue 5):
# it refines the heuristic's choice with what it learned instead of overruling it. A large value
# lets it choose any replica. docs/design.md, decision 14.
RL_MODEL_CANDIDATE_MARGIN = env_float("RL_MODEL_CANDIDATE_MARGIN", 1.0, minimum=0.0)
# The Q-network: "per_replica" scores each replica with shared weights, so one model serves any
# cluster up to MAX_REPLICAS and named replicas may come and go; "mlp" is the original
# specification's (N + 7 inputs, one output per position of NUM_REPLICAS replicas). per_replica
# routed better in every simulator scenario measured (docs/design.md, decision 15).
RL_NETWORK = env_choice("RL_NETWORK", "per_replica", ("mlp", "per_replica"))
# Replicas the per-replica network's training observations hold; /select_replica accepts up to 256,
# and a larger cluster than this is routed least-loaded (and says so).
MAX_REPLICAS = env_int("MAX_REPLICAS", 64, minimum=2, maximum=256)
# The latency term of the reward: "log" (1 - log(1 + latency/scale): keeps its signal from 100 ms
# to minutes), "per_token" (log of latency per output token; needs output_tokens in the reports) or
# "linear" (the original specification's 1 - latency/1000, clipped at -10 past 11 s).
REWARD_LATENCY_MODE = env_choice("REWARD_LATENCY_MODE", "log", ("log", "per_token", "linear"))
# Weight of the time to first token in the reward, for reports that send ttft_ms: minus this times
# log(1 + ttft/1000 ms). 0 (off) until measured beyond the prefix-heavy Mooncake trace, where 1 helped.
REWARD_TTFT_WEIGHT = env_float("REWARD_TTFT_WEIGHT", 0.0, minimum=0.0, maximum=100.0)
# Half-life of the per-replica statistics the service learns from recorded outcomes (latency,
# failures, time per token): recent outcomes count most, a replica's past fades in a few minutes.
REPLICA_STATS_HALF_LIFE_SECONDS = env_float("REPLICA_STATS_HALF_LIFE_SECONDS", 30.0, minimum=1.0,
                                            maximum=3600.0)
# The desired-replica gauge (agent_app/capacity.py): rlagent_desired_replicas{pool=...}, the LLM
# replicas of each pool that hold this latency target (ms); unset: off, no gauge. The target is on
# the AUTOSCALE_PERCENTILE of end-to-end latency ("e2e") or of time to first token ("ttft", which
# needs ttft_ms in every report), read from per-replica histograms.
AUTOSCALE_TARGET_MS_LIMITS = (1.0, 3_600_000.0)
AUTOSCALE_PERCENTILE_CHOICES = (50, 90, 95, 99)
AUTOSCALE_METRIC_CHOICES = ("e2e", "ttft")
AUTOSCALE_TARGET_MS = (env_float("AUTOSCALE_TARGET_MS", 1000.0, minimum=AUTOSCALE_TARGET_MS_LIMITS[0],
                                 maximum=AUTOSCALE_TARGET_MS_LIMITS[1])
                       if env_str("AUTOSCALE_TARGET_MS", "") else None)
AUTOSCALE_PERCENTILE = int(env_choice("AUTOSCALE_PERCENTILE", "50",
                                      tuple(str(p) for p in AUTOSCALE_PERCENTILE_CHOICES)))
AUTOSCALE_METRIC = env_choice("AUTOSCALE_METRIC", "e2e", AUTOSCALE_METRIC_CHOICES)


def _autoscale_pool_targets(raw: str) -> dict[str, dict[str, float | int | str]]:
    """AUTOSCALE_POOL_TARGETS read: pool name -> the fields it overrides, each checked as the
    AUTOSCALE_* setting it overrides is."""
    import json

    from agent_app.pools import check_name  # plain Python, no models: safe while settings load

    def invalid(why: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"Environment variable AUTOSCALE_POOL_TARGETS={raw!r} is invalid: {why}.")

    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise invalid(f"expected JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise invalid('expected a JSON object such as {"<pool>": {"target_ms": 500}}')
    low, high = AUTOSCALE_TARGET_MS_LIMITS
    targets: dict[str, dict[str, float | int | str]] = {}
    for pool, fields in parsed.items():
        try:
            check_name(pool)
        except ValueError as exc:
            raise invalid(str(exc)) from exc
        if not isinstance(fields, dict) or not fields or set(fields) - {"target_ms", "percentile", "metric"}:
            raise invalid(f"pool {pool!r}: expected an object of target_ms, percentile and/or metric, "
                          f"got {fields!r}")
        target: dict[str, float | int | str] = {}
        if "target_ms" in fields:
            value = fields["target_ms"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise invalid(f"pool {pool!r}: target_ms must be a number from {low:g} to {high:g}, "
                              f"got {value!r}")
            target["target_ms"] = float(value)
        if "percentile" in fields:
            value = fields["percentile"]
            if isinstance(value, bool) or value not in AUTOSCALE_PERCENTILE_CHOICES:
                raise invalid(f"pool {pool!r}: percentile must be one of {AUTOSCALE_PERCENTILE_CHOICES}, "
                              f"got {value!r}")
            target["percentile"] = int(value)
        if "metric" in fields:
            value = fields["metric"]
            if value not in AUTOSCALE_METRIC_CHOICES:
                raise invalid(f"pool {pool!r}: metric must be one of {AUTOSCALE_METRIC_CHOICES}, "
                              f"got {value!r}")
            target["metric"] = value
        targets[pool] = target
    return targets


# Per-pool overrides of the three above, as JSON: {"<pool>": {"target_ms": 2000, "percentile": 99,
# "metric": "ttft"}, ...}. A field left out is the AUTOSCALE_* setting's; a pool given a target_ms
# has its gauge even while AUTOSCALE_TARGET_MS is unset.
AUTOSCALE_POOL_TARGETS = _autoscale_pool_targets(env_str("AUTOSCALE_POOL_TARGETS", ""))
AUTOSCALE_MIN_REPLICAS = env_int("AUTOSCALE_MIN_REPLICAS", 1, minimum=0, maximum=10_000)
AUTOSCALE_MAX_REPLICAS = env_int("AUTOSCALE_MAX_REPLICAS", 64, minimum=1, maximum=10_000)
if AUTOSCALE_MAX_REPLICAS < AUTOSCALE_MIN_REPLICAS:
    raise ImproperlyConfigured(
        f"Environment variable AUTOSCALE_MAX_REPLICAS={AUTOSCALE_MAX_REPLICAS} is below "
        f"AUTOSCALE_MIN_REPLICAS={AUTOSCALE_MIN_REPLICAS}.")
# Seconds of outcomes one evaluation reads, and how long the estimate must stay lower before the
# recommendation goes down (it goes up at once).
AUTOSCALE_WINDOW_SECONDS = env_float("AUTOSCALE_WINDOW_SECONDS", 60.0, minimum=10.0, maximum=600.0)
AUTOSCALE_COOLDOWN_SECONDS = env_float("AUTOSCALE_COOLDOWN_SECONDS", 300.0, minimum=0.0, maximum=86_400.0)
# The LLM replicas' batch slots (vLLM's max_num_seqs): with them the estimate reads a replica as a
# batching engine whose requests slow by AUTOSCALE_BATCH_SLOWDOWN of their time alone per other
# request in the batch (agent_app/autoscaling.py); unset: as a processor-sharing queue, which
# over-provisions a batching engine.
AUTOSCALE_REPLICA_SLOTS = (env_int("AUTOSCALE_REPLICA_SLOTS", 256, minimum=1, maximum=100_000)
                           if env_str("AUTOSCALE_REPLICA_SLOTS", "") else None)
# Unset: the estimate's default (agent_app.autoscaling.DEFAULT_BATCH_SLOWDOWN, 0.03).
AUTOSCALE_BATCH_SLOWDOWN = (env_float("AUTOSCALE_BATCH_SLOWDOWN", 0.03, minimum=0.0, maximum=10.0)
                            if env_str("AUTOSCALE_BATCH_SLOWDOWN", "") else None)
# Prefix-cache awareness (agent_app/prefix_index.py): which prompt-prefix blocks the service sent
# to each replica, least recently used forgotten first, in Redis when configured (shared by the web
# workers), else in each web worker's memory. The bound is per replica, as a replica's KV cache is.
PREFIX_INDEX_STORE = env_choice("PREFIX_INDEX_STORE", "redis" if REDIS_HOST else "memory",
                                ("redis", "memory"))
if PREFIX_INDEX_STORE == "redis" and not REDIS_HOST:
    raise ImproperlyConfigured("Environment variable PREFIX_INDEX_STORE=redis needs REDIS_HOST to be set.")
PREFIX_INDEX_BLOCKS_PER_REPLICA = env_int("PREFIX_INDEX_BLOCKS_PER_REPLICA", 8192, minimum=16,
                                          maximum=1_000_000)
PREFIX_INDEX_MAX_REPLICAS = env_int("PREFIX_INDEX_MAX_REPLICAS", 256, minimum=1, maximum=10_000)
# Blocks a web worker buffers between two writes: 256 requests of 512 hashes per refresh, so a busy
# worker's long prompts are not dropped (with 16 384, tens of long-prompt requests a second
# overflowed it and the cache hits on Mooncake through the API fell from 22.8 % to 15.7 %); about
# 140 bytes each, 18 MiB when full, which it only gets while Redis does not answer.
PREFIX_INDEX_PENDING_BLOCKS = env_int("PREFIX_INDEX_PENDING_BLOCKS", 131_072, minimum=64, maximum=10_000_000)
# How long a match may wait for Redis, and how long Redis is left alone after it failed.
PREFIX_INDEX_TIMEOUT_SECONDS = env_float("PREFIX_INDEX_TIMEOUT_SECONDS", 0.1, minimum=0.001, maximum=10.0)
PREFIX_INDEX_RETRY_SECONDS = env_float("PREFIX_INDEX_RETRY_SECONDS", 5.0, minimum=0.0, maximum=3600.0)
# Replica pools (agent_app/pools.py): an unknown pool in a request is created on first use (true)
# or answered 404 (false); a web worker serves at most POOLS_SERVED_MAX pools besides the default
# one from memory (the least recently used one is dropped and reloaded when asked for again); a
# training worker keeps at most POOLS_TRAINERS_MAX pools' agents and replay mirrors in memory.
POOLS_AUTO_CREATE = env_bool("POOLS_AUTO_CREATE", False)
POOLS_SERVED_MAX = env_int("POOLS_SERVED_MAX", 256, minimum=1, maximum=100_000)
POOLS_TRAINERS_MAX = env_int("POOLS_TRAINERS_MAX", 8, minimum=1, maximum=10_000)
# Seconds a trainer's lease lasts without renewal: how long a killed trainer blocks the next one.
TRAINING_LEASE_SECONDS = env_float("TRAINING_LEASE_SECONDS", 30.0, minimum=2.0)
# How long POST /train waits for the training worker before answering 504.
TRAIN_TIMEOUT_SECONDS = env_float("TRAIN_TIMEOUT_SECONDS", 30.0, minimum=1.0)
# Seconds between a web worker's checks for newly published weights and shared settings.
SYNC_INTERVAL_SECONDS = env_float("SYNC_INTERVAL_SECONDS", 0.5, minimum=0.05, maximum=60.0)
# Refresh the serving snapshot from a background thread (off only in tests: per call instead).
POLICY_SYNC_THREAD = env_bool("POLICY_SYNC_THREAD", True)
# Endpoints callable without an API key inside a trusted network (comma-separated).
OPEN_ENDPOINTS = env_list("OPEN_ENDPOINTS", ["select_replica", "stats", "health"])
# Port the web server listens on (the original specification's examples use 5000) and its worker
# processes: deploy/gunicorn.conf.py reads both from here, so a bad value stops gunicorn with a
# message naming it.
PORT = env_int("PORT", 5000, minimum=1, maximum=65535)
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 2, minimum=1, maximum=512)
# Where gunicorn's workers share their Prometheus counters (deploy/gunicorn.conf.py exports it).
PROMETHEUS_MULTIPROC_DIR = Path(
    env_str("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "prometheus-multiproc"))
).resolve()
# /metrics without a staff session or an API key: only where nothing but Prometheus reaches the port.
METRICS_OPEN = env_bool("METRICS_OPEN", False)
# Points of history the dashboard's charts keep (one per training run; 1440 = a day at 60 s).
DASHBOARD_HISTORY_SAMPLES = env_int("DASHBOARD_HISTORY_SAMPLES", 1440, minimum=10, maximum=100_000)

# --- Celery -----------------------------------------------------------------------------
# Redis when REDIS_HOST is set; otherwise kombu's filesystem transport, which needs no server and
# lets a separate worker and beat process share the queue through a folder on this machine.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
BROKER_DIR = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem"):
    # The folders are made at start-up (rlagent_project/local_files.py), not here.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),  # else kombu writes ./control
    }
# Where /train, /save_model and the admin's rollback read the training worker's answer: Redis
# when REDIS_HOST is set, else files under DATA_DIR/results (Celery's file-system backend).
CELERY_RESULT_BACKEND = env_str(
    "CELERY_RESULT_BACKEND",
    REDIS_URL or f"rlagent_project.result_backend:FolderResultBackend+file://{DATA_DIR / 'results'}",
)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# django-celery-beat's DatabaseScheduler, keeping a training interval set in the admin over restarts.
CELERY_BEAT_SCHEDULER = "agent_app.beat:OperatorScheduler"
# Everything the trainer does goes to one queue, consumed by a worker with concurrency 1.
CELERY_TASK_ROUTES = {"tasks.training.*": {"queue": "training"}}
CELERY_TASK_DEFAULT_QUEUE = "training"
# One task at a time per worker process: a training run must not sit behind a prefetched one.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Late ack: a task lost with its worker is redelivered. Safe because every task is idempotent
# (the lease serialises training; a redelivered run is just one more run on fresh data).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Limits below the training interval, so a stuck run ends before the next one is due (with a
# floor of a few seconds: publishing and a checkpoint write need that much on a busy disk).
CELERY_TASK_SOFT_TIME_LIMIT = max(5, int(TRAINING_INTERVAL_SECONDS * 0.75))
CELERY_TASK_TIME_LIMIT = max(8, int(TRAINING_INTERVAL_SECONDS * 0.9))
# A run stops taking gradient steps after this and publishes what it learned: on a busy machine
# a shorter run, never one killed at the soft limit with nothing published.
TRAINING_RUN_BUDGET_SECONDS = CELERY_TASK_SOFT_TIME_LIMIT * 0.6
# Redis redelivers an unacknowledged task after this; above the hard limit, or runs would double.
# The key prefix keeps several deployments sharing one Redis apart, queues included.
if CELERY_BROKER_URL.startswith("redis"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_TASK_TIME_LIMIT * 4,
        "global_keyprefix": REDIS_KEY_PREFIX,
    }
CELERY_RESULT_EXPIRES = 3600
if CELERY_RESULT_BACKEND.startswith("redis"):
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": REDIS_KEY_PREFIX}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Periodic tasks expire after one interval: a backlog (worker down) never piles up runs.
CELERY_BEAT_SCHEDULE = {
    "train": {
        "task": "tasks.training.scheduled_train",
        "schedule": TRAINING_INTERVAL_SECONDS,
        "options": {"expires": TRAINING_INTERVAL_SECONDS},
    },
    "sync-target-if-due": {
        "task": "tasks.training.sync_target_if_due",
        "schedule": TRAINING_INTERVAL_SECONDS,
        "options": {"expires": TRAINING_INTERVAL_SECONDS},
    },
    "checkpoint-if-due": {
        "task": "tasks.training.checkpoint_if_due",
        "schedule": TRAINING_INTERVAL_SECONDS * 5,
        "options": {"expires": TRAINING_INTERVAL_SECONDS * 5},
    },
}

# --- Logging ----------------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # An outage answers thousands of 503s: agent_app.api.errors sums them up every 10 s instead
    # of django.request writing one line each.
    "filters": {"not_503": {"()": "django.utils.log.CallbackFilter",
                            "callback": lambda record: getattr(record, "status_code", None) != 503}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django": {"level": "INFO"}, "django.request": {"filters": ["not_503"]}},
}

