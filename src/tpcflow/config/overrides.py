"""Build a :class:`~tpcflow.config.schema.Config` from YAML and dotted ``key=value`` overrides.

Syntax (CosmicTagger / hydra style)::

    run.id=demo run.iterations=200 mode.optimizer.learning_rate=1e-3
    data.file=train.h5 data.synthetic=true network=a21 network.n_initial_filters=8

Every key is checked against the dataclasses: an unknown or mistyped key raises
:class:`~tpcflow.errors.ConfigError` naming the closest valid keys, and every value is
coerced to the field's type (``true/false/yes/no/1/0`` for booleans) or rejected.
``network=<preset>`` is applied before any ``network.<field>=`` override, whatever the order.

The network fields live in ``tpcflow.models`` (torch), which this layer may not import;
callers pass a :class:`NetworkSchema` (see ``tpcflow.train.resolve.network_schema``).
Without one, network overrides are kept as strings and checked later.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from tpcflow import atomic
from tpcflow.config.schema import Config, DataConfig, ModeConfig, NetworkSection, OptimizerConfig, RunConfig
from tpcflow.errors import ConfigError, closest

__all__ = [
    "NetworkSchema",
    "OptionInfo",
    "coerce",
    "config_from_dict",
    "config_to_dict",
    "describe_options",
    "format_options",
    "load_config",
    "parse_override",
    "save_yaml",
]


@dataclass(frozen=True)
class NetworkSchema:
    """The network fields and presets, supplied by a layer that may import torch.

    Attributes
    ----------
    presets : mapping preset name -> mapping field -> value
        Every preset's complete field values (``dataclasses.asdict(PRESETS[name])``).
    default : str
        The preset used when ``network=`` is not given.
    choices : mapping field -> allowed values
        For the string fields with a closed set of values.
    """

    presets: Mapping[str, Mapping[str, Any]]
    default: str = "uresnet"
    choices: Mapping[str, tuple] = dataclasses.field(default_factory=dict)

    @property
    def fields(self) -> Mapping[str, Any]:
        return self.presets[self.default]


@dataclass(frozen=True)
class OptionInfo:
    """One option for ``--help``: dotted key, default, help text, allowed values."""

    key: str
    default: Any
    help: str
    choices: tuple | None = None


_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "mode": ModeConfig,
    "mode.optimizer": OptimizerConfig,
    "data": DataConfig,
}


def _leaf_fields() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """Map every dotted leaf key to (section, field, type)."""
    out = {}
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            out[f"{section}.{f.name}"] = (section, f, hints[f.name])
    return out


_LEAVES = _leaf_fields()
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(key: str, value: Any, typ: type, choices: tuple | None = None) -> Any:
    """Convert ``value`` (a string from the command line, or a YAML scalar) to ``typ``.

    Raises
    ------
    ConfigError
        If the value cannot be read as ``typ`` or is not one of ``choices``.
    """
    try:
        if typ is bool:
            if isinstance(value, bool):
                out = value
            elif str(value).strip().lower() in _TRUE:
                out = True
            elif str(value).strip().lower() in _FALSE:
                out = False
            else:
                raise ValueError
        elif typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            out = int(value) if not isinstance(value, str) else int(value.strip())
        elif typ is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        elif typ is str:
            out = "" if value is None else str(value)
        elif isinstance(typ, type) and typ in (tuple, list):
            out = tuple(value) if isinstance(value, (list, tuple)) else tuple(yaml.safe_load(f"[{value}]"))
        else:
            out = value
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{key}: {value!r} is not a valid {name}") from None
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: {out!r} is not allowed\nAvailable: {', '.join(map(repr, choices))}")
    return out


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"a.b=value"`` into ``("a.b", "value")``.

    Raises
    ------
    ConfigError
        If there is no ``=`` or the key is empty.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. run.iterations=100")
    return key, value


def _all_keys(schema: NetworkSchema | None) -> list[str]:
    keys = list(_LEAVES) + ["network"]
    if schema is not None:
        keys += [f"network.{k}" for k in schema.fields]
    return keys


def _unknown(key: str, schema: NetworkSchema | None) -> ConfigError:
    best = closest(key, _all_keys(schema), n=3)
    return ConfigError(f"unknown configuration key: {key!r}\nAvailable: {', '.join(best)}")


def _coerce_network(key: str, field_name: str, value: Any, schema: NetworkSchema | None) -> Any:
    if schema is None:
        return value
    if field_name not in schema.fields:
        raise _unknown(key, schema)
    default = schema.fields[field_name]
    typ = type(default) if default is not None else str
    return coerce(key, value, typ, schema.choices.get(field_name))


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key != "network":
            out += _flatten(v, key + ".")
        elif isinstance(v, Mapping):  # network: {preset: ..., field: ...}
            out += [("network", v["preset"])] if "preset" in v else []
            out += [(f"network.{fk}", fv) for fk, fv in v.items() if fk != "preset"]
        else:
            out.append((key, v))
    return out


def load_config(
    overrides: Sequence[str] = (),
    *,
    base: Config | Mapping | str | Path | None = None,
    mode: str | None = None,
    network_schema: NetworkSchema | None = None,
) -> Config:
    """Return the configuration: defaults, then ``base``, then ``overrides``, then ``mode``.

    Parameters
    ----------
    overrides : sequence of str
        ``key=value`` strings.
    base : Config, mapping, or path of a YAML file, optional
        Starting point (for example a run's saved ``config.yaml``).
    mode : {"train", "iotest", "inference"}, optional
        Forces ``mode.name`` (the sub-command).
    network_schema : NetworkSchema, optional
        Validates ``network`` keys and values.

    Raises
    ------
    ConfigError
        Unknown key (with the closest valid ones), bad value, or bad YAML file.
    """
    pairs: list[tuple[str, Any]] = []
    if isinstance(base, (str, Path)):
        pairs += _flatten(_read_yaml(Path(base)))
    elif isinstance(base, Config):
        pairs += _flatten(config_to_dict(base))
    elif base is not None:
        pairs += _flatten(base)
    pairs += [parse_override(o) for o in overrides]
    if mode is not None:
        pairs.append(("mode.name", mode))
    return _build(pairs, network_schema)


def config_from_dict(d: Mapping, network_schema: NetworkSchema | None = None) -> Config:
    """Build a Config from a nested mapping (the layout of ``config.yaml``)."""
    return _build(_flatten(d), network_schema)


def _build(pairs: list[tuple[str, Any]], schema: NetworkSchema | None) -> Config:
    values: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    preset = schema.default if schema is not None else "uresnet"
    net: dict[str, Any] = {}
    for key, value in pairs:
        if key == "network":
            preset = str(value)
            if schema is not None and preset not in schema.presets:
                raise ConfigError(
                    f"network: unknown preset {preset!r}\nAvailable: {', '.join(sorted(schema.presets))}"
                )
        elif key.startswith("network."):
            net[key[len("network."):]] = _coerce_network(key, key[len("network."):], value, schema)
        elif key in _LEAVES:
            section, f, typ = _LEAVES[key]
            values[section][f.name] = coerce(key, value, typ, f.metadata.get("choices"))
        else:
            raise _unknown(key, schema)
    for name, value in values["run"].items():
        if name in ("iterations", "aux_iterations", "num_threads") and value < 0:
            raise ConfigError(f"run.{name}: {value} must be >= 0")
    if values["run"].get("minibatch_size", 1) < 1:
        raise ConfigError(f"run.minibatch_size: {values['run']['minibatch_size']} must be >= 1")
    if values["mode.optimizer"].get("gradient_accumulation", 1) < 1:
        raise ConfigError("mode.optimizer.gradient_accumulation must be >= 1")
    if values["data"].get("downsample", 0) < 0:
        raise ConfigError("data.downsample must be >= 0")
    if schema is not None:  # drop overrides equal to the preset's value: keeps saved configs short
        net = {k: v for k, v in net.items() if schema.presets[preset][k] != v}
    opt = OptimizerConfig(**values["mode.optimizer"])
    return Config(
        run=RunConfig(**values["run"]),
        mode=ModeConfig(**values["mode"], optimizer=opt),
        data=DataConfig(**values["data"]),
        network=NetworkSection(preset=preset, overrides=MappingProxyType(dict(net))),
    )


def config_to_dict(cfg: Config, network: Mapping[str, Any] | None = None) -> dict:
    """Return the nested plain-dict form of ``cfg`` (YAML-ready).

    ``network`` (the resolved network fields) replaces the raw overrides when given.
    """

    def section(obj) -> dict:
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            out[f.name] = section(v) if dataclasses.is_dataclass(v) else v
        return out

    net = {"preset": cfg.network.preset}
    net.update(dict(network) if network is not None else dict(cfg.network.overrides))
    net = {k: (list(v) if isinstance(v, tuple) else v) for k, v in net.items()}
    return {"run": section(cfg.run), "mode": section(cfg.mode), "data": section(cfg.data), "network": net}


def save_yaml(cfg: Config, path: str | Path, network: Mapping[str, Any] | None = None) -> Path:
    """Write ``config_to_dict(cfg, network)`` as YAML, atomically (temp file + rename)."""
    return atomic.write_text(path, yaml.safe_dump(config_to_dict(cfg, network), sort_keys=False))


def _read_yaml(path: Path) -> Mapping:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err}\nin file {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file is not valid YAML: {err}\nin file {path}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file must hold a mapping of sections (run, mode, data, network)\nin file {path}")
    return data


def describe_options(network_schema: NetworkSchema | None = None) -> list[OptionInfo]:
    """List every option with its default, for ``--help`` (network fields need a schema)."""
    out = []
    for key, (_section, f, _typ) in _LEAVES.items():
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(OptionInfo(key, default, f.metadata.get("help", ""), f.metadata.get("choices")))
    if network_schema is not None:
        out.append(
            OptionInfo("network", network_schema.default, "network preset", tuple(sorted(network_schema.presets)))
        )
        for k, v in network_schema.fields.items():
            out.append(
                OptionInfo(
                    f"network.{k}",
                    v,
                    f"network field (default of preset {network_schema.default!r})",
                    network_schema.choices.get(k),
                )
            )
    return out


def format_options(network_schema: NetworkSchema | None = None) -> str:
    """Render :func:`describe_options` as an aligned text block."""
    lines = []
    for o in describe_options(network_schema):
        left = f"  {o.key}={o.default!r}"
        extra = f" (one of {', '.join(map(str, o.choices))})" if o.choices else ""
        lines.append(f"{left:<44} {o.help}{extra}")
    return "\n".join(lines)
