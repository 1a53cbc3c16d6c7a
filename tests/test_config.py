"""Configs: presets, overrides with types, unknown fields are errors naming the valid ones."""

import numpy as np
import pytest

from crl import train
from crl.config import ConfigError, parse_assignments


def test_overrides_are_typed():
    run, agent = train.build_configs("sac", None, parse_assignments(
        ["frames=5e4", "hidden_dims=64,32", "video=true", "actor_lr=3e-4", "env=dmc-state:walker-walk"]))
    assert run.frames == 50_000 and run.video is True and run.env == "dmc-state:walker-walk"
    assert agent.hidden_dims == (64, 32) and agent.actor_lr == pytest.approx(3e-4)


def test_preset_then_overrides():
    run, agent = train.build_configs("sac", "cpu-smoke", {"batch_size": "64"})
    assert agent.hidden_dims == (256, 256) and agent.batch_size == 64 and run.frames == 100_000


@pytest.mark.parametrize("bad,suggestion", [("hiden_dims", "hidden_dims"), ("frame", "frames")])
def test_unknown_field_names_closest(bad, suggestion):
    with pytest.raises(ConfigError, match=suggestion):
        train.build_configs("sac", None, {bad: "1"})


def test_unknown_preset_and_agent():
    with pytest.raises(ConfigError, match="cpu-smoke"):
        train.build_configs("sac", "cpu-smok", {})
    with pytest.raises(ValueError, match="sac"):
        train.build_configs("sak", None, {})


def test_bad_values():
    with pytest.raises(ConfigError, match="frames"):
        train.build_configs("sac", None, {"frames": "many"})
    with pytest.raises(ConfigError, match="field=value"):
        parse_assignments(["frames"])


@pytest.mark.parametrize("value", ["1e-3", "2.5e0", "1e999", "nan", 2.5, True])
def test_int_fields_take_only_whole_numbers(value):
    with pytest.raises(ConfigError, match="field 'batch_size' expects a whole number"):
        train.build_configs("sac", None, {"batch_size": value})


def test_int_fields_take_whole_numbers_in_any_notation():
    assert train.build_configs("sac", None, {"batch_size": "1e2"})[1].batch_size == 100
    assert train.build_configs("sac", None, {"batch_size": 64.0})[1].batch_size == 64  # YAML 64.0
    assert train.build_configs("sac", None, {"frames": "1e5"})[0].frames == 100_000
    assert type(train.build_configs("sac", None, {"batch_size": np.int64(32)})[1].batch_size) is int


def test_a_scalar_for_a_tuple_field_is_a_one_item_tuple():
    assert train.build_configs("sac", None, {"hidden_dims": 256})[1].hidden_dims == (256,)  # YAML 256
    assert train.build_configs("sac", None, parse_assignments(["hidden_dims=256"]))[1].hidden_dims == (256,)
    with pytest.raises(ConfigError, match="field 'hidden_dims' expects a list"):
        train.build_configs("sac", None, {"hidden_dims": {"width": 256}})


@pytest.mark.parametrize("name,value,allowed", [
    ("frames", -5, "positive"), ("eval_every_frames", 0, "positive"), ("num_envs", 0, "positive"),
    ("eval_episodes", 0, "positive"), ("update_every", 0, "positive"), ("keep_checkpoints", 0, "positive"),
    ("seed_frames", -1, ">= 0"), ("checkpoint_every_frames", -1, ">= 0"), ("seed", -1, ">= 0")])
def test_run_values_out_of_range_are_refused_naming_field_and_value(name, value, allowed):
    with pytest.raises(ConfigError, match=rf"run config field '{name}' must be {allowed}.*got {value}"):
        train.build_configs("sac", None, {name: str(value)})


def test_zero_batch_size_is_refused():
    with pytest.raises(ConfigError, match="'batch_size' must be positive.*got 0"):
        train.build_configs("sac", None, {"batch_size": "0"})


@pytest.mark.parametrize("agent, name, value", [
    ("sac", "actor_update_every", "0"), ("drq", "target_update_every", "0"), ("curl", "curl_update_every", "0"),
    ("drq", "n_step", "0"), ("drq", "critic_augmentations", "0"), ("drqv2", "hidden_dims", "256,0"),
    ("curl-rainbow", "num_atoms", "0"), ("drq-eps", "hidden_dim", "-1")])
def test_agent_counts_and_intervals_must_be_positive(agent, name, value):
    with pytest.raises(ConfigError, match=rf"{agent} config field '{name}' must be positive"):
        train.build_configs(agent, None, {name: value})
