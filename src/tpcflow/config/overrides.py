"""Build a :class:`~tpcflow.config.schema.Config` from YAML and dotted ``key=value`` overrides.

Syntax (CosmicTagger / Hydra style)::

    run.id=demo run.iterations=200 mode.optimizer.learning_rate=1e-3
    data.file=train.h5 data.synthetic=true network=a21 network.n_initial_filters=8

The sections are OmegaConf structured configs made from the frozen dataclasses of
:mod:`tpcflow.config.schema` and :class:`~tpcflow.config.network.NetworkConfig`: OmegaConf parses
each value, a string from the command line or a YAML scalar, to the field's type (``1e-3``,
``true``/``yes``/``on``/``1``; ``2.5`` is no int) and refuses unknown keys.  Its errors are re-raised as
:class:`~tpcflow.errors.ConfigError` naming the key, the value, and the closest valid keys.
On top: the allowed values of string fields (``choices`` in the field metadata), value
ranges, and ``network=<preset>``, which is applied before any ``network.<field>=`` override,
whatever the order (Hydra's config-group idiom).  Hydra itself is not used: it would own
``sys.argv`` and the output folders of ``tpcflow train``, which keeps its own ``--help``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from tpcflow import atomic
from tpcflow.config.network import CHOICES, PRESETS, NetworkConfig
from tpcflow.config.schema import Config, DataConfig, ModeConfig, NetworkSection, OptimizerConfig, RunConfig
from tpcflow.errors import ConfigError, closest

__all__ = [
    "RESUMABLE_KEYS",
    "OptionInfo",
    "config_from_dict",
    "config_to_dict",
    "describe_options",
    "experiment_differences",
    "format_options",
    "load_config",
    "parse_override",
    "read_yaml",
    "save_yaml",
]

#: defaults of a sub-command, applied after ``base`` (a run's config.yaml) and before the overrides:
#: inference covers the whole file unless ``run.iterations`` is given on the command line
MODE_DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {"inference": (("run.iterations", 0),)}

DEFAULT_PRESET = "uresnet"


@dataclass(frozen=True)
class OptionInfo:
    """One option for ``--help``: dotted key, default, help text, allowed values."""

    key: str
    default: Any
    help: str
    choices: tuple | None = None


_SECTIONS: dict[str, type] = {"run": RunConfig, "mode": ModeConfig, "mode.optimizer": OptimizerConfig, "data": DataConfig}


def _leaves() -> dict[str, dataclasses.Field]:
    """Every dotted leaf key of run / mode / data and its dataclass field."""
    out = {}
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name != "optimizer":
                out[f"{section}.{f.name}"] = f
    return out


_LEAVES = _leaves()
_NETWORK_FIELDS = {f.name: str(f.type) for f in dataclasses.fields(NetworkConfig)}
_NETWORK_KEYS = [f"network.{name}" for name in _NETWORK_FIELDS]


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


def _unknown(key: str) -> ConfigError:
    best = closest(key, [*_LEAVES, "network", *_NETWORK_KEYS], n=3)
    return ConfigError(f"unknown configuration key: {key!r}\nAvailable: {', '.join(best)}")


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mapping (the layout of ``config.yaml``) -> ``(dotted key, value)`` pairs."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key == "network" and isinstance(v, Mapping):  # network: {preset: ..., field: ...}
            out += [("network", v["preset"])] if "preset" in v else []
            out += [(f"network.{fk}", fv) for fk, fv in v.items() if fk != "preset"]
        elif isinstance(v, Mapping):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _merge(node, key: str, value: Any, full_key: str, typ: str):
    """Merge ``key: value`` into the structured ``node``; OmegaConf's errors become ConfigError."""
    try:
        return OmegaConf.merge(node, OmegaConf.create(_nest(key, value)))
    except ConfigKeyError:
        raise _unknown(full_key) from None
    except ValidationError:
        raise ConfigError(f"{full_key}: {value!r} is not a valid {typ}") from None
    except OmegaConfBaseException as err:  # defensive: any other refusal names the key
        raise ConfigError(f"{full_key}: {value!r} cannot be used ({type(err).__name__}: {str(err).splitlines()[0]})") from None


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _check_choices(section: str, obj) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        allowed = f.metadata.get("choices")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{section}.{f.name}: {value!r} is not allowed\nAvailable: {', '.join(map(repr, allowed))}")


#: the largest data.downsample of synthetic events (1280 ticks >> 10 = 1 row)
MAX_SYNTHETIC_DOWNSAMPLE = 10


def _check_ranges(cfg: Config) -> None:
    """Every value that would fail later (a division by zero, torch refusing a rate) fails here, at start-up."""
    low = {"run.iterations": 0, "run.aux_iterations": 0, "run.num_threads": 0, "run.minibatch_size": 1,
           "run.aux_minibatch_size": 1, "mode.checkpoint_iteration": 1, "mode.logging_iteration": 1,
           "mode.keep_checkpoints": 1, "mode.event_displays": 0, "mode.optimizer.gradient_accumulation": 1,
           "data.downsample": 0, "data.synthetic_events": 1, "data.num_threads": 0}
    for key, minimum in low.items():
        section, _, name = key.rpartition(".")
        obj = cfg
        for part in section.split("."):
            obj = getattr(obj, part)
        if getattr(obj, name) < minimum:
            raise ConfigError(f"{key}: {getattr(obj, name)} must be >= {minimum}")
    opt = cfg.mode.optimizer
    for name in ("learning_rate", "weight_decay", "momentum", "warmup_epochs", "decay_start_epoch", "decay_rate",
                 "lr_floor"):
        value = getattr(opt, name)
        if not math.isfinite(value) or value < 0:  # torch refuses these only at the first step
            raise ConfigError(f"mode.optimizer.{name}: {value!r} must be a finite number >= 0")
    if cfg.data.synthetic and cfg.data.downsample > MAX_SYNTHETIC_DOWNSAMPLE:
        raise ConfigError(f"data.downsample: {cfg.data.downsample} leaves no pixel of the synthetic 1280x2048 "
                          f"planes; use 0..{MAX_SYNTHETIC_DOWNSAMPLE}")


def _build(pairs: list[tuple[str, Any]]) -> Config:
    """Apply ``(dotted key, value)`` pairs in order over the defaults (``network=`` first)."""
    preset = DEFAULT_PRESET
    for key, value in pairs:
        if key == "network":
            preset = str(value)
            if preset not in PRESETS:
                raise ConfigError(f"network: unknown preset {preset!r}\nAvailable: {', '.join(sorted(PRESETS))}")
    sections = OmegaConf.structured(_Sections)
    network = OmegaConf.structured(PRESETS[preset])
    changed: set[str] = set()
    for key, value in pairs:
        if key == "network":
            continue
        if key.startswith("network."):
            name = key[len("network."):]
            if name not in _NETWORK_FIELDS:
                raise _unknown(key)
            network = _merge(network, name, value, key, _NETWORK_FIELDS[name])
            changed.add(name)
        elif key in _LEAVES:
            sections = _merge(sections, key, value, key, str(_LEAVES[key].type))
        else:
            raise _unknown(key)
    obj = OmegaConf.to_object(sections)
    for section in ("run", "mode", "data"):
        _check_choices(section, getattr(obj, section))
    _check_choices("mode.optimizer", obj.mode.optimizer)
    net = OmegaConf.to_container(network)
    for key, allowed in CHOICES.items():
        if net[key] not in allowed:
            raise ConfigError(f"network.{key}: {net[key]!r} is not allowed\nAvailable: {', '.join(map(repr, allowed))}")
    base = dataclasses.asdict(PRESETS[preset])
    overrides = {k: net[k] for k in sorted(changed) if net[k] != base[k]}  # keeps saved configs short
    cfg = Config(run=obj.run, mode=obj.mode, data=obj.data,
                 network=NetworkSection(preset=preset, overrides=MappingProxyType(overrides)))
    _check_ranges(cfg)
    cfg.network.resolve()  # NetworkConfig's own checks (minimums, odd kernel)
    return cfg


@dataclass(frozen=True, kw_only=True)
class _Sections:
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    mode: ModeConfig = dataclasses.field(default_factory=ModeConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)


def load_config(
    overrides: Sequence[str] = (),
    *,
    base: Config | Mapping | str | Path | None = None,
    mode: str | None = None,
) -> Config:
    """Return the configuration: defaults, then ``base``, then the mode's defaults, then ``overrides``.

    ``mode="inference"`` sets ``run.iterations=0`` (the whole file) over a training ``base``;
    an explicit ``run.iterations=N`` override still limits it to N minibatches.

    Parameters
    ----------
    overrides : sequence of str
        ``key=value`` strings; each value is converted to its field's type by OmegaConf.
    base : Config, mapping, or path of a YAML file, optional
        Starting point (for example a run's saved ``config.yaml``).
    mode : {"train", "iotest", "inference"}, optional
        Forces ``mode.name`` (the sub-command).

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
    pairs += list(MODE_DEFAULTS.get(mode or "", ()))
    pairs += [parse_override(o) for o in overrides]
    if mode is not None:
        pairs.append(("mode.name", mode))
    return _build(pairs)


def config_from_dict(d: Mapping) -> Config:
    """Build a Config from a nested mapping (the layout of ``config.yaml``)."""
    return _build(_flatten(d))


def config_to_dict(cfg: Config, network: Mapping[str, Any] | None = None) -> dict:
    """Return the nested plain-dict form of ``cfg`` (YAML-ready).

    ``network`` (the resolved network fields) replaces the raw overrides when given.
    """
    net = {"preset": cfg.network.preset}
    net.update(dict(network) if network is not None else dict(cfg.network.overrides))
    return {"run": dataclasses.asdict(cfg.run), "mode": dataclasses.asdict(cfg.mode),
            "data": dataclasses.asdict(cfg.data), "network": net}


def save_yaml(cfg: Config, path: str | Path, network: Mapping[str, Any] | None = None) -> Path:
    """Write ``config_to_dict(cfg, network)`` as YAML, atomically."""
    return atomic.write_text(path, yaml.safe_dump(config_to_dict(cfg, network), sort_keys=False))


#: keys a resumed run may change: how long it runs and how it reports, not what it trains
RESUMABLE_KEYS = (
    "run.iterations", "run.aux_iterations", "run.output_dir", "run.compute_mode", "run.num_threads",
    "run.progress", "run.resume", "run.compile", "mode.name", "mode.checkpoint_iteration",
    "mode.keep_checkpoints", "mode.logging_iteration", "mode.weights_location", "mode.output_file",
    "mode.event_displays", "mode.best_metric", "mode.early_stopping", "data.data_directory", "data.num_threads",
)


def experiment_differences(saved: Mapping, current: Mapping) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for every experiment-defining key that differs.

    ``saved`` and ``current`` are nested dicts in the layout of ``config.yaml``
    (:func:`config_to_dict` with the resolved network).  Keys in :data:`RESUMABLE_KEYS` may
    differ on resume; any other difference (network, data, optimizer, minibatch size, seed,
    precision...) means another experiment.
    """
    a, b = dict(_flatten(saved)), dict(_flatten(current))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_KEYS and a.get(k) != b.get(k)]


def read_yaml(path: str | Path) -> Mapping:
    """Read a YAML config file as a mapping (:class:`ConfigError` naming the file when it is not one)."""
    return _read_yaml(Path(path))


def _read_yaml(path: Path) -> Mapping:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file: {err}\nin file {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file is not valid YAML: {err}\nin file {path}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file must hold a mapping of sections (run, mode, data, network)\nin file {path}")
    return data


def describe_options() -> list[OptionInfo]:
    """List every option with its default, for ``--help``."""
    out = []
    for key, f in _LEAVES.items():
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append(OptionInfo(key, default, f.metadata.get("help", ""), f.metadata.get("choices")))
    out.append(OptionInfo("network", DEFAULT_PRESET, "network preset", tuple(sorted(PRESETS))))
    for k, v in dataclasses.asdict(PRESETS[DEFAULT_PRESET]).items():
        out.append(OptionInfo(f"network.{k}", v, f"network field (default of preset {DEFAULT_PRESET!r})",
                              CHOICES.get(k)))
    return out


def format_options() -> str:
    """Render :func:`describe_options` as an aligned text block."""
    lines = []
    for o in describe_options():
        left = f"  {o.key}={o.default!r}"
        extra = f" (one of {', '.join(map(str, o.choices))})" if o.choices else ""
        lines.append(f"{left:<44} {o.help}{extra}")
    return "\n".join(lines)
