"""DQNConfig: defaults, validation that names the field, JSON round trip, routing shape."""

from __future__ import annotations

import json

import pytest

from agent_app.rl import DQNConfig, routing_config


def test_routing_config_has_state_n_plus_7_and_one_action_per_replica() -> None:
    config = routing_config(3)
    assert (config.state_dim, config.n_actions) == (10, 3)
    assert routing_config(5).state_dim == 12


def test_defaults_follow_the_specification_where_it_has_one() -> None:
    config = routing_config(3)
    assert config.hidden_sizes == (128, 128, 128)
    assert config.batch_size == 64
    assert config.buffer_capacity == 10_000
    assert config.target_update_interval == 100
    assert (config.epsilon_start, config.epsilon_min, config.epsilon_decay) == (1.0, 0.01, 0.995)
    assert config.loss == "mse"
    assert config.tau == 1.0
    assert 0.0 <= config.gamma <= 0.5  # routing: a low discount (see config.py)


def test_to_dict_is_json_safe_and_round_trips() -> None:
    config = routing_config(4, dueling=True, prioritized=True, n_step=3, seed=7, loss="huber")
    data = json.loads(json.dumps(config.to_dict()))
    assert DQNConfig.from_dict(data) == config


def test_unknown_field_is_refused_by_name() -> None:
    data = routing_config(3).to_dict() | {"learning_rate": 0.1}
    with pytest.raises(ValueError, match="learning_rate"):
        DQNConfig.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gamma", 1.5),
        ("gamma", float("nan")),
        ("lr", 0.0),
        ("batch_size", 0),
        ("batch_size", 20_000),
        ("hidden_sizes", ()),
        ("hidden_sizes", (128, -1)),
        ("tau", 0.0),
        ("epsilon_min", 2.0),
        ("epsilon_decay", 0.0),
        ("loss", "l1"),
        ("max_grad_norm", -1.0),
        ("per_alpha", 1.5),
        ("per_beta_steps", 0),
        ("per_eps", 0.0),
        ("n_step", 0),
        ("device", "tpu"),
        ("seed", "abc"),
        ("dueling", "yes"),
        ("target_update_interval", 0),
    ],
)
def test_invalid_values_raise_an_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        routing_config(3, **{field: value})


def test_routing_config_refuses_to_override_derived_sizes() -> None:
    with pytest.raises(ValueError, match="state_dim"):
        routing_config(3, state_dim=4)


def test_replace_validates_again() -> None:
    config = routing_config(3)
    assert config.replace(gamma=0.9).gamma == 0.9
    with pytest.raises(ValueError, match="gamma"):
        config.replace(gamma=-0.1)
