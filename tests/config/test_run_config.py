"""Configuration: dotted overrides, coercion, unknown keys, YAML round trip, --help listing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.config import (
    Config,
    NetworkSchema,
    config_from_dict,
    config_to_dict,
    describe_options,
    format_options,
    load_config,
    save_yaml,
)
from tpcflow.errors import ConfigError

SCHEMA = NetworkSchema(
    presets={
        "uresnet": {"n_initial_filters": 16, "network_depth": 6, "residual": True, "connections": "concat"},
        "a21": {"n_initial_filters": 8, "network_depth": 6, "residual": False, "connections": "sum"},
    }
)


def test_defaults_match_reference():
    cfg = load_config()
    assert cfg.data.image_producer == "sbndwire"
    assert cfg.data.label_producer == "sbnd_cosmicseg"
    assert cfg.mode.optimizer.name == "adam"
    assert cfg.mode.optimizer.learning_rate == pytest.approx(3e-4)
    assert cfg.run.minibatch_size == 2
    assert cfg.network.preset == "uresnet"


def test_dotted_overrides_are_coerced():
    cfg = load_config(
        [
            "run.id=abc",
            "run.iterations=7",
            "run.minibatch_size=4",
            "mode.optimizer.learning_rate=1e-3",
            "mode.optimizer.gradient_accumulation=3",
            "data.file=a.h5",
            "data.aux_file=b.h5",
            "data.downsample=2",
            "data.synthetic=true",
            "network.n_initial_filters=8",
            "network=a21",
        ],
        network_schema=SCHEMA,
    )
    assert cfg.run.id == "abc" and cfg.run.iterations == 7 and cfg.run.minibatch_size == 4
    assert cfg.mode.optimizer.learning_rate == 1e-3 and cfg.mode.optimizer.gradient_accumulation == 3
    assert cfg.data.file == "a.h5" and cfg.data.aux_file == "b.h5" and cfg.data.downsample == 2
    assert cfg.data.synthetic is True
    # the preset is applied first whatever the order; an override equal to the preset is dropped
    assert cfg.network.preset == "a21"
    assert dict(cfg.network.overrides) == {}
    cfg2 = load_config(["network=a21", "network.n_initial_filters=4"], network_schema=SCHEMA)
    assert dict(cfg2.network.overrides) == {"n_initial_filters": 4}


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.iterations = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, expect",
    [
        ("run.iteratons=3", "run.iterations"),
        ("learning_rate=0.1", "mode.optimizer.learning_rate"),
        ("mode.optimizer.learning_rat=0.1", "mode.optimizer.learning_rate"),
        ("data.synthtic=true", "data.synthetic"),
        ("network.n_initial_filter=8", "network.n_initial_filters"),
    ],
)
def test_unknown_key_names_closest(override, expect):
    with pytest.raises(ConfigError, match="unknown configuration key") as info:
        load_config([override], network_schema=SCHEMA)
    assert expect in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "run.iterations=ten",
        "run.iterations=2.5",
        "data.synthetic=maybe",
        "run.precision=fp8",
        "mode.optimizer.name=lamb",
        "network=resnet50",
        "network.n_initial_filters=eight",
        "run.minibatch_size=0",
        "noequals",
    ],
)
def test_bad_values_raise_config_error(override):
    with pytest.raises(ConfigError):
        load_config([override], network_schema=SCHEMA)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(["run.id=x", "network=a21", "network.network_depth=4", "run.precision=bfloat16"], network_schema=SCHEMA)
    path = save_yaml(cfg, tmp_path / "config.yaml")
    back = load_config(base=path, network_schema=SCHEMA)
    assert back == cfg
    assert config_from_dict(config_to_dict(cfg), SCHEMA) == cfg
    # later overrides win over the file
    assert load_config(["run.id=y"], base=path, network_schema=SCHEMA).run.id == "y"


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(base=p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(base=p)


def test_describe_lists_every_field_with_default():
    keys = {o.key: o.default for o in describe_options(SCHEMA)}
    for section in (Config().run, Config().mode, Config().mode.optimizer, Config().data):
        for f in dataclasses.fields(section):
            if dataclasses.is_dataclass(getattr(section, f.name)):
                continue
            assert any(k.endswith("." + f.name) for k in keys), f.name
    assert keys["network.n_initial_filters"] == 16
    text = format_options(SCHEMA)
    assert "mode.optimizer.gradient_accumulation=1" in text


@settings(max_examples=40, deadline=None)
@given(
    iterations=st.integers(0, 10**6),
    lr=st.floats(1e-8, 10.0, allow_nan=False),
    synth=st.booleans(),
    run_id=st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12),
)
def test_override_text_round_trip(iterations, lr, synth, run_id):
    cfg = load_config(
        [f"run.iterations={iterations}", f"mode.optimizer.learning_rate={lr!r}", f"data.synthetic={synth}", f"run.id={run_id}"]
    )
    assert (cfg.run.iterations, cfg.mode.optimizer.learning_rate, cfg.data.synthetic, cfg.run.id) == (
        iterations,
        lr,
        synth,
        run_id,
    )
