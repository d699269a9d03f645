"""Network registry: presets, exact parameter counts (reference spec section 3), config validation."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from tpcflow.errors import ConfigError
from tpcflow.models.registry import (
    PRESETS,
    NetworkConfig,
    build_network,
    count_parameters,
    get_preset,
    meta_network,
    network_config_from_dict,
)

# Reference totals: CosmicTagger master instantiated on the meta device (reference spec 3.4)
REFERENCE_COUNTS = {"uresnet": 18_382_131, "a21": 8_510_547, "polaris": 1_926_403}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_preset_parameter_counts_match_reference(name):
    assert count_parameters(meta_network(PRESETS[name])) == REFERENCE_COUNTS[name]


def _stage_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pname, p in model.named_parameters():
        parts = pname.split(".")
        key = parts[0] if parts[0] not in ("encoders", "decoders") else f"L{parts[1]}"
        counts[key] = counts.get(key, 0) + p.numel()
    return counts


def test_default_per_stage_counts_match_reference_table():
    # reference spec 3.1: per-level totals (encoder + decoder of the same level)
    counts = _stage_counts(meta_network(PRESETS["uresnet"]))
    assert counts == {
        "stem": 448,
        "L0": 20_544, "L1": 79_952, "L2": 178_272, "L3": 315_504, "L4": 491_648, "L5": 706_704,
        "deepest": 16_565_488,
        "final": 23_520,
        "classifier": 51,
    }


def test_default_layer_census_matches_reference():
    model = meta_network(PRESETS["uresnet"])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert (len(convs), len(bns)) == (90, 89)
    assert sum(m.bias.numel() for m in convs) == 7_123
    assert sum(m.weight.numel() + m.bias.numel() for m in bns) == 14_240
    assert sum(b.numel() for b in model.buffers()) == 14_329
    deepest = model.deepest
    assert count_parameters(deepest.squeeze) == 86_784
    assert count_parameters(deepest.blocks) == 16_391_680
    assert count_parameters(deepest.expand) == 87_024


def test_a21_and_polaris_stage_counts():
    a21 = _stage_counts(meta_network(PRESETS["a21"]))
    assert a21["stem"] == 224 and a21["L0"] == 2_728 and a21["L5"] == 89_208
    assert a21["deepest"] == 8_283_128 and a21.get("final", 0) == 0 and a21["classifier"] == 27
    pol = _stage_counts(meta_network(PRESETS["polaris"]))
    assert [pol[f"L{i}"] for i in range(7)] == [10_576, 40_560, 90_000, 158_896, 247_248, 355_056, 482_320]
    assert pol["deepest"] == 536_544 and pol["final"] == 4_704


def test_no_bias_drops_exactly_the_conv_biases():
    cfg = PRESETS["uresnet"].replace(bias=False)
    assert count_parameters(meta_network(cfg)) == 18_375_008


def test_3d_variant_has_the_2d_parameter_count():
    for name, total in REFERENCE_COUNTS.items():
        cfg = PRESETS[name].replace(conv_mode="3D")
        assert count_parameters(meta_network(cfg)) == total


def test_config_rejects_bad_values_and_unknown_keys():
    with pytest.raises(ConfigError, match="connections"):
        NetworkConfig(connections="add")
    with pytest.raises(ConfigError, match="n_initial_filters"):
        NetworkConfig(n_initial_filters=0)
    with pytest.raises(ConfigError, match="network_depth"):
        NetworkConfig(network_depth="6")
    with pytest.raises(ConfigError) as err:
        network_config_from_dict({"n_initial_filter": 8})
    assert "n_initial_filters" in str(err.value)
    with pytest.raises(ConfigError, match="uresnet"):
        get_preset("uresnett")
    with pytest.raises(ConfigError):
        build_network({"name": "uresnet"})


def test_config_round_trips_through_dict():
    for cfg in PRESETS.values():
        assert network_config_from_dict(asdict(cfg)) == cfg
    assert PRESETS["a21"].replace(n_initial_filters=4).n_initial_filters == 4


def test_multiplicative_growth_channels():
    cfg = NetworkConfig(growth_rate="multiplicative", n_initial_filters=4)
    assert [cfg.channels(i) for i in range(4)] == [4, 8, 16, 32]
    assert [PRESETS["uresnet"].channels(i) for i in range(7)] == [16, 32, 48, 64, 80, 96, 112]
