"""Configs: presets, overrides with types, unknown fields are errors naming the valid ones."""

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
