"""Structured run configuration: frozen dataclasses, OmegaConf for overrides, YAML.

* :mod:`tpcflow.config.schema`: the sections ``run``, ``mode`` (+ ``mode.optimizer``), ``data``, ``network``.
* :mod:`tpcflow.config.network`: :class:`NetworkConfig` and CosmicTagger's presets (no torch).
* :mod:`tpcflow.config.overrides`: dotted overrides on OmegaConf structured configs, YAML, ``--help`` listing.

This layer imports nothing from tpcflow but :mod:`tpcflow.errors` and :mod:`tpcflow.atomic`, and no torch.
"""

from tpcflow.config.network import CHOICES, PRESETS, NetworkConfig, get_preset, network_config_from_dict
from tpcflow.config.overrides import (
    OptionInfo,
    config_from_dict,
    config_to_dict,
    describe_options,
    experiment_differences,
    format_options,
    load_config,
    parse_override,
    read_yaml,
    save_yaml,
)
from tpcflow.config.schema import Config, DataConfig, ModeConfig, NetworkSection, OptimizerConfig, RunConfig

__all__ = [
    "CHOICES",
    "PRESETS",
    "Config",
    "DataConfig",
    "ModeConfig",
    "NetworkConfig",
    "NetworkSection",
    "OptimizerConfig",
    "OptionInfo",
    "RunConfig",
    "config_from_dict",
    "config_to_dict",
    "describe_options",
    "experiment_differences",
    "format_options",
    "get_preset",
    "load_config",
    "network_config_from_dict",
    "parse_override",
    "read_yaml",
    "save_yaml",
]
