"""Structured run configuration: frozen dataclasses plus dotted ``key=value`` overrides.

* :mod:`tpcflow.config.schema`: the sections ``run``, ``mode`` (+ ``mode.optimizer``), ``data``, ``network``.
* :mod:`tpcflow.config.overrides`: parsing, type coercion, YAML, ``--help`` listing.

This layer imports nothing from tpcflow but :mod:`tpcflow.errors`.
"""

from tpcflow.config.overrides import (
    NetworkSchema,
    OptionInfo,
    coerce,
    config_from_dict,
    config_to_dict,
    describe_options,
    format_options,
    load_config,
    parse_override,
    save_yaml,
)
from tpcflow.config.schema import Config, DataConfig, ModeConfig, NetworkSection, OptimizerConfig, RunConfig

__all__ = [
    "Config",
    "DataConfig",
    "ModeConfig",
    "NetworkSchema",
    "NetworkSection",
    "OptimizerConfig",
    "OptionInfo",
    "RunConfig",
    "coerce",
    "config_from_dict",
    "config_to_dict",
    "describe_options",
    "format_options",
    "load_config",
    "parse_override",
    "save_yaml",
]
