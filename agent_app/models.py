"""Shared agent state: everything a user can see or set lives here or in Redis, never in a process."""

from __future__ import annotations

from django.db import models

from agent_app.pools import DEFAULT_POOL, current_pool

POOL_NAME_LENGTH = 63


def pool_field(**kwargs) -> models.CharField:
    """The name of the pool a row belongs to (agent_app/pools.py); "default" for the original agent."""
    return models.CharField(max_length=POOL_NAME_LENGTH, default=DEFAULT_POOL, db_index=True, **kwargs)


class Pool(models.Model):
    """A replica pool: one deployment's replicas with their own agent (agent_app/pools.py)."""

    name = models.CharField(max_length=POOL_NAME_LENGTH, unique=True)
    description = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AgentState(models.Model):
    """The row per pool the trainer publishes to and every web worker polls (docs/design.md, decision 1)."""

    pool = models.CharField(max_length=POOL_NAME_LENGTH, default=DEFAULT_POOL, unique=True)
    epsilon = models.FloatField(default=1.0)
    steps_done = models.BigIntegerField(default=0)
    model_version = models.PositiveIntegerField(default=0)
    # NumPy weights of the online network (npz bytes, no pickle) served by the web workers.
    serving_weights = models.BinaryField(null=True, blank=True, editable=False)
    # The trainer's full state (online, target, optimizer, epsilon, steps) as a torch file loaded
    # with weights_only=True, so any worker can continue where the last training run stopped.
    trainer_state = models.BinaryField(null=True, blank=True, editable=False)
    last_loss = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=16, default="cpu")
    target_syncs = models.PositiveIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)
    # Who routes under RL_ROUTING_GATE: "heuristic" until the model is measured better, then "model".
    router = models.CharField(max_length=16, default="heuristic")
    router_since = models.DateTimeField(null=True, blank=True)
    # The replay store's cursor the last published training run had read up to: beat trains a pool
    # only when its store holds something newer.
    trained_through = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        verbose_name = "agent state"
        verbose_name_plural = "agent state"

    def __str__(self) -> str:
        return f"model v{self.model_version}, {self.steps_done} steps, epsilon {self.epsilon:.3f}"

    @classmethod
    def load(cls, pool: str | None = None) -> AgentState:
        state, _ = cls.objects.get_or_create(pool=pool or current_pool())
        return state


class Experience(models.Model):
    """One reported request outcome, for the database replay store (bounded by REPLAY_CAPACITY per pool)."""

    pool = pool_field()
    experience_id = models.CharField(max_length=128, null=True, blank=True)
    state = models.JSONField()
    action = models.PositiveSmallIntegerField()
    reward = models.FloatField()
    next_state = models.JSONField()
    latency_ms = models.FloatField()
    success = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "experience_id"], name="one_experience_per_id")
        ]

    def __str__(self) -> str:
        return f"action {self.action}, reward {self.reward:.3f}"


class Checkpoint(models.Model):
    """One checkpoint file in MODEL_PATH's folder (one row per file); the newest that loads is used
    at start. Size and sha256 are recorded at save time so any process can spot a damaged file
    without torch; `status` says what the last check found. A pool's files are its own folder's."""

    pool = pool_field()
    OK, MISSING, DAMAGED, INCOMPATIBLE = "ok", "missing", "damaged", "incompatible"
    STATUSES = [
        (OK, "ok"),
        (MISSING, "file missing"),
        (DAMAGED, "file damaged"),
        (INCOMPATIBLE, "another architecture"),
    ]

    version = models.PositiveIntegerField()
    steps_done = models.BigIntegerField()
    epsilon = models.FloatField()
    loss = models.FloatField(null=True, blank=True)
    avg_reward = models.FloatField(null=True, blank=True)
    path = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    size = models.BigIntegerField(null=True, blank=True)  # bytes written; null: not recorded
    sha256 = models.CharField(max_length=64, blank=True, default="")  # of the file as written
    status = models.CharField(max_length=16, choices=STATUSES, default=OK)
    problem = models.TextField(blank=True, default="")  # what the check found, for the operator
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        get_latest_by = "created_at"
        constraints = [models.UniqueConstraint(fields=["path"], name="one_checkpoint_row_per_file")]

    def __str__(self) -> str:
        return f"v{self.version} at {self.steps_done} steps"


class ReplicaSelection(models.Model):
    """Decisions per replica and policy, summed over every web worker's flushed counters."""

    pool = pool_field()
    replica_idx = models.PositiveSmallIntegerField()
    policy = models.CharField(max_length=32)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "replica_idx", "policy"],
                                    name="one_counter_per_pool_pair")
        ]


class ReplicaOutcome(models.Model):
    """Recorded outcomes per time bucket, replica and the arm that decided (model, heuristic, or ""
    when a report did not come through a decision_id), summed over every web worker's flushes.
    The per-replica statistics the model sees and the routing gate's evidence are read from here
    (agent_app/replica_outcomes.py)."""

    pool = pool_field()
    bucket = models.BigIntegerField(db_index=True)  # unix seconds // BUCKET_SECONDS
    replica = models.CharField(max_length=128)
    arm = models.CharField(max_length=16, blank=True, default="")
    count = models.BigIntegerField(default=0)
    failures = models.BigIntegerField(default=0)
    latency_sum = models.FloatField(default=0.0)  # successful requests only
    reward_sum = models.FloatField(default=0.0)
    reward_sq_sum = models.FloatField(default=0.0)
    tpot_sum = models.FloatField(default=0.0)  # ms per output token after the first
    tpot_count = models.BigIntegerField(default=0)
    ttft_sum = models.FloatField(default=0.0)  # ms of time to first token per 1000 prompt tokens
    ttft_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "bucket", "replica", "arm"],
                                    name="one_outcome_row_per_pool_key")
        ]


class ReplicaLatencyBin(models.Model):
    """Latency histograms per time bucket and replica, summed over every web worker's flushes: the
    successful requests whose end-to-end latency ("e2e") or time to first token ("ttft") fell in one
    5 % wide log bin (agent_app/replay/histogram.py). The desired-replica gauge reads each replica's
    percentiles from here (agent_app/capacity.py)."""

    pool = pool_field()
    bucket = models.BigIntegerField(db_index=True)  # unix seconds // BUCKET_SECONDS, as ReplicaOutcome
    replica = models.CharField(max_length=128)
    metric = models.CharField(max_length=8)  # "e2e" or "ttft"
    bin = models.IntegerField()  # histogram.latency_bucket of the latency
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "bucket", "replica", "metric", "bin"],
                                    name="one_latency_bin_per_pool_key")
        ]


class GateBlock(models.Model):
    """The routing gate's evidence under block assignment (docs/design.md, decision 14): the outcomes
    of the requests DECIDED in one time block by one arm, summed over every web worker's flushes.
    The verdict compares the arms' block mean rewards (agent_app/replica_outcomes.py)."""

    pool = pool_field()
    seconds = models.IntegerField()  # the block length the index counts in (RL_GATE_BLOCK_SECONDS)
    block = models.BigIntegerField(db_index=True)  # unix seconds of the decision // seconds
    arm = models.CharField(max_length=16)  # "model" or "heuristic"
    count = models.BigIntegerField(default=0)
    reward_sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "seconds", "block", "arm"],
                                    name="one_gate_block_per_pool_key")
        ]


class TrainingLease(models.Model):
    """A row claimed with a conditional update: whoever holds an unexpired lease trains alone."""

    name = models.CharField(max_length=80, primary_key=True)  # "trainer", or "trainer:<pool>"
    holder = models.CharField(max_length=128, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)


class ApiKey(models.Model):
    """An API key for state-changing endpoints; only its SHA-256 digest is stored."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a key.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AgentConfig(models.Model):
    """Operator settings edited in the admin (one row per pool); every process picks changes up in seconds."""

    pool = models.CharField(max_length=POOL_NAME_LENGTH, default=DEFAULT_POOL, unique=True)
    exploration_enabled = models.BooleanField(
        null=True, blank=True,
        help_text="Empty: follow RL_EXPLORATION. Yes/No overrides it at run time.",
    )
    epsilon_min = models.FloatField(default=0.01)
    epsilon_decay = models.FloatField(default=0.995)
    learning_rate = models.FloatField(null=True, blank=True, help_text="Empty: the RL core's default.")
    discount = models.FloatField(null=True, blank=True, help_text="Empty: the RL core's default.")
    batch_size = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: TRAINING_BATCH_SIZE.")
    latency_scale_ms = models.FloatField(null=True, blank=True, help_text="Empty: the RL core's default.")
    balance_weight = models.FloatField(null=True, blank=True, help_text="Empty: the RL core's default.")
    failure_penalty = models.FloatField(null=True, blank=True, help_text="Empty: the RL core's default.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "agent configuration"
        verbose_name_plural = "agent configuration"

    def __str__(self) -> str:
        return "agent configuration"

    @classmethod
    def load(cls, pool: str | None = None) -> AgentConfig:
        config, _ = cls.objects.get_or_create(pool=pool or current_pool())
        return config


class ArmOutcome(models.Model):
    """Running totals of request outcomes per A/B arm (e.g. "rl" and "heuristic")."""

    pool = pool_field()
    arm = models.CharField(max_length=32)
    count = models.BigIntegerField(default=0)
    successes = models.BigIntegerField(default=0)
    latency_sum = models.FloatField(default=0.0)
    latency_sq_sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pool", "arm"], name="one_total_per_pool_arm")]

    def __str__(self) -> str:
        return f"{self.arm}: {self.count} requests"


class ArmLatencyBucket(models.Model):
    """Latency histogram per arm on log-spaced buckets (5% wide), for the p99."""

    pool = pool_field()
    arm = models.CharField(max_length=32)
    bucket = models.PositiveIntegerField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "arm", "bucket"], name="one_bucket_per_pool_arm")
        ]


class ConfigChange(models.Model):
    """Audit log of operator changes made in the admin: who, when, which setting, old and new value."""

    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    pool = pool_field()
    # The operator's username as text, so the record outlives the account.
    username = models.CharField(max_length=150, blank=True)
    field = models.CharField(max_length=64)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        verbose_name = "configuration change"

    def __str__(self) -> str:
        return f"{self.field}: {self.old_value} → {self.new_value} by {self.username or 'unknown'}"


class MetricSample(models.Model):
    """One point of the dashboard's history, written after each training run and trimmed."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    pool = pool_field()
    model_version = models.PositiveIntegerField()
    steps_done = models.BigIntegerField()
    epsilon = models.FloatField()
    loss = models.FloatField(null=True, blank=True)
    avg_reward = models.FloatField(null=True, blank=True)
    buffer_size = models.PositiveIntegerField(null=True, blank=True)
    # Replica name -> mean latency (ms) of the recent experiences routed to it.
    latency_by_replica = models.JSONField(default=dict)
    # Replica name -> fraction of the decisions since the previous sample.
    share_by_replica = models.JSONField(default=dict)
    fallback_rate = models.FloatField(null=True, blank=True)
    exploration_rate = models.FloatField(null=True, blank=True)
    # Cumulative decision counts "replica_idx:policy" -> count, to take the next sample's deltas.
    selection_totals = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"model v{self.model_version} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class TrainerCounters(models.Model):
    """Counters of work done by whichever process trains (one row), exported by /metrics.

    In the database rather than in a process, because training runs in Celery workers that
    Prometheus does not scrape, possibly on other machines.
    """

    training_runs = models.BigIntegerField(default=0)
    training_seconds = models.FloatField(default=0.0)
    # Upper bound of a duration bucket (seconds, as text) -> runs that fell in it (not cumulative).
    duration_buckets = models.JSONField(default=dict)
    checkpoints_written = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "trainer counters"

    @classmethod
    def load(cls) -> TrainerCounters:
        counters, _ = cls.objects.get_or_create(pk=1)
        return counters
