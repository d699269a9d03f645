"""Configuration: dotted overrides, coercion, unknown keys, YAML round trip, --help listing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpcflow.config import (
    Config,
    config_from_dict,
    config_to_dict,
    describe_options,
    format_options,
    load_config,
    save_yaml,
)
from tpcflow.errors import ConfigError


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
    )
    assert cfg.run.id == "abc" and cfg.run.iterations == 7 and cfg.run.minibatch_size == 4
    assert cfg.mode.optimizer.learning_rate == 1e-3 and cfg.mode.optimizer.gradient_accumulation == 3
    assert cfg.data.file == "a.h5" and cfg.data.aux_file == "b.h5" and cfg.data.downsample == 2
    assert cfg.data.synthetic is True
    # the preset is applied first whatever the order; an override equal to the preset is dropped
    assert cfg.network.preset == "a21"
    assert dict(cfg.network.overrides) == {}
    cfg2 = load_config(["network=a21", "network.n_initial_filters=4"])
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
        load_config([override])
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
        load_config([override])


def test_yaml_round_trip(tmp_path):
    cfg = load_config(["run.id=x", "network=a21", "network.network_depth=4", "run.precision=bfloat16"])
    path = save_yaml(cfg, tmp_path / "config.yaml")
    back = load_config(base=path)
    assert back == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    # later overrides win over the file
    assert load_config(["run.id=y"], base=path).run.id == "y"


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(base=p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(base=p)


def test_describe_lists_every_field_with_default():
    keys = {o.key: o.default for o in describe_options()}
    for section in (Config().run, Config().mode, Config().mode.optimizer, Config().data):
        for f in dataclasses.fields(section):
            if dataclasses.is_dataclass(getattr(section, f.name)):
                continue
            assert any(k.endswith("." + f.name) for k in keys), f.name
    assert keys["network.n_initial_filters"] == 16
    text = format_options()
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


def test_library_errors_are_wrapped_with_key_value_and_hint():
    """OmegaConf does the parsing and type checks; the errors still name the key, the value and the fix."""
    with pytest.raises(ConfigError) as info:
        load_config(["run.iterations=2.5"])
    assert str(info.value) == "run.iterations: '2.5' is not a valid int"
    with pytest.raises(ConfigError, match="data.synthetic: 'maybe' is not a valid bool"):
        load_config(["data.synthetic=maybe"])
    with pytest.raises(ConfigError, match="network.residual: 'sometimes' is not a valid bool"):
        load_config(["network.residual=sometimes"])
    with pytest.raises(ConfigError, match=r"(?s)unknown configuration key: 'run.iteration'.*run.iterations"):
        load_config(["run.iteration=3"])
    with pytest.raises(ConfigError, match=r"network.connections: 'glue' is not allowed"):
        load_config(["network.connections=glue"])
    with pytest.raises(ConfigError, match="network.filter_size_deepest: 4 must be odd"):
        load_config(["network.filter_size_deepest=4"])


def test_values_are_converted_by_field_type():
    cfg = load_config(["data.synthetic=yes", "run.channels_last=On", "mode.optimizer.learning_rate=1e-3",
                       "run.id=on", "run.output_dir=0x1F", "mode.weights_location=", "network.network_depth=4",
                       "network=a21"])
    assert cfg.data.synthetic is True and cfg.run.channels_last is True
    assert cfg.mode.optimizer.learning_rate == 1e-3
    assert (cfg.run.id, cfg.run.output_dir, cfg.mode.weights_location) == ("on", "0x1F", "")  # str stays str
    # network= is applied first, whatever the order; the override is kept, the preset resolved
    assert cfg.network.preset == "a21" and dict(cfg.network.overrides) == {"network_depth": 4}
    net = cfg.network.resolve()
    assert (net.name, net.n_initial_filters, net.network_depth) == ("a21", 8, 4)


@pytest.mark.parametrize("override, message", [
    ("mode.checkpoint_iteration=0", "mode.checkpoint_iteration: 0 must be >= 1"),
    ("mode.logging_iteration=0", "mode.logging_iteration: 0 must be >= 1"),
    ("mode.optimizer.learning_rate=-1e-3", "learning_rate: -0.001 must be a finite number >= 0"),
    ("mode.optimizer.learning_rate=nan", "learning_rate: nan must be a finite number >= 0"),
    ("mode.optimizer.weight_decay=inf", "weight_decay: inf must be a finite number >= 0"),
])
def test_values_that_would_fail_later_fail_at_start_up(override, message):
    """Issue 16, item 4: no ZeroDivisionError or torch error after the first iteration."""
    with pytest.raises(ConfigError, match=message):
        load_config([override])
    with pytest.raises(ConfigError, match="data.downsample: 20 leaves no pixel"):
        load_config(["data.synthetic=true", "data.downsample=20"])
    assert load_config(["data.downsample=20"]).data.downsample == 20  # files: the loader checks their grid


def test_a_non_utf8_config_file_is_a_config_error(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("run:\n  id: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"(?s)not valid YAML.*utf-8.*latin1.yaml"):
        load_config(base=p)
