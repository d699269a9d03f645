"""ThreadProcessor configuration: the larcv block, from YAML, a dict, or larcv PSet text.

Keys (larcv ``ThreadProcessor`` / larcv3 ``QueueProcessor``):

============  =======  ==================================================================
key           default  meaning
============  =======  ==================================================================
Verbosity     2        larcv message level (0 debug ... 5 critical); <= 1 logs every batch
EnableFilter  false    accepted for compatibility (tpcflow has no filter modules)
RandomAccess  0        0 sequential, 1 random blocks, 2 random events (false=0, true=2)
RandomSeed    0        seed of the shuffles (epoch e uses seed + e)
InputFiles    (req.)   one path or a list of larcv3 HDF5 files
ProcessType   (req.)   list of batch filler types (see :mod:`tpcflow.loader.fillers`)
ProcessName   (req.)   list of batch names, one per ProcessType
NumThreads    1        workers filling storage slots (0: fill in the caller)
NumStorage    2        slots in the circular buffer
ProcessList   {}       one block per ProcessName with the filler's keys
============  =======  ==================================================================

tpcflow extensions: ``WorkerType`` ("process", default, or "thread"), ``StartMethod``
(multiprocessing start method, default "forkserver" where available, else "spawn") and
``BatchTimeout`` (seconds a consumer waits for one batch before raising, default 300).
Unknown keys raise :class:`~tpcflow.errors.ConfigError`.

Source: larcv ThreadProcessor wiki page and ``ThreadProcessor::configure``; larcv3
``QueueProcessor::configure``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tpcflow.errors import ConfigError, closest
from tpcflow.loader.fillers import make_filler
from tpcflow.loader.pset import parse_pset

__all__ = ["FillerConfig", "ProcessorConfig", "cosmic_tagger_config", "load_processor_config"]

_KEYS = {
    "Verbosity": "verbosity",
    "EnableFilter": "enable_filter",
    "RandomAccess": "random_access",
    "RandomSeed": "random_seed",
    "InputFiles": "input_files",
    "ProcessType": "process_type",
    "ProcessName": "process_name",
    "NumThreads": "num_threads",
    "NumStorage": "num_storage",
    "ProcessList": "process_list",
    "WorkerType": "worker_type",
    "StartMethod": "start_method",
    "BatchTimeout": "batch_timeout",
}


@dataclass(frozen=True)
class FillerConfig:
    """One batch filler: ``name`` (ProcessName), ``process_type`` and its ProcessList block."""

    name: str
    process_type: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessorConfig:
    """A validated ThreadProcessor block (see the module docstring for the keys)."""

    input_files: tuple[str, ...]
    fillers: tuple[FillerConfig, ...]
    verbosity: int = 2
    enable_filter: bool = False
    random_access: int = 0
    random_seed: int = 0
    num_threads: int = 1
    num_storage: int = 2
    worker_type: str = "process"
    start_method: str | None = None
    batch_timeout: float = 300.0
    name: str = "ThreadProcessor"

    def __post_init__(self):
        if not self.input_files:
            raise ConfigError("InputFiles must name at least one file")
        if self.random_access not in (0, 1, 2):
            raise ConfigError(f"RandomAccess must be 0, 1 or 2, but got RandomAccess={self.random_access!r}")
        if self.num_threads < 0:
            raise ConfigError(f"NumThreads must be >= 0, but got NumThreads={self.num_threads}")
        if self.num_storage < 1:
            raise ConfigError(f"NumStorage must be >= 1, but got NumStorage={self.num_storage}")
        if self.worker_type not in ("process", "thread"):
            raise ConfigError(f"WorkerType must be 'process' or 'thread', but got {self.worker_type!r}")
        if self.start_method not in (None, "fork", "spawn", "forkserver"):
            raise ConfigError(f"StartMethod must be fork, spawn or forkserver, but got {self.start_method!r}")
        if self.batch_timeout <= 0:
            raise ConfigError(f"BatchTimeout must be > 0, but got {self.batch_timeout}")
        if not self.fillers:
            raise ConfigError("ProcessType / ProcessName must list at least one batch filler")
        for f in self.fillers:  # validates every filler block eagerly
            make_filler(f.name, f.process_type, f.params)

    def to_dict(self) -> dict:
        """Return the ``{name: {larcv keys}}`` dict form (loads back with :func:`load_processor_config`)."""
        block = {
            "Verbosity": self.verbosity,
            "EnableFilter": self.enable_filter,
            "RandomAccess": self.random_access,
            "RandomSeed": self.random_seed,
            "InputFiles": list(self.input_files),
            "ProcessType": [f.process_type for f in self.fillers],
            "ProcessName": [f.name for f in self.fillers],
            "NumThreads": self.num_threads,
            "NumStorage": self.num_storage,
            "WorkerType": self.worker_type,
            "BatchTimeout": self.batch_timeout,
            "ProcessList": {f.name: dict(f.params) for f in self.fillers},
        }
        if self.start_method is not None:
            block["StartMethod"] = self.start_method
        return {self.name: block}


def _as_list(v, key):
    if isinstance(v, (str, Path)):
        return [str(v)]
    if isinstance(v, (list, tuple)):
        return [str(x) if isinstance(x, Path) else x for x in v]
    raise ConfigError(f"{key} must be a list, but got {v!r}")


def _from_block(name: str, block: dict) -> ProcessorConfig:
    if not isinstance(block, dict):
        raise ConfigError(f"configuration block {name!r} must be a mapping, but got {type(block).__name__}")
    kw: dict = {"name": name}
    for k, v in block.items():
        if k not in _KEYS:
            raise ConfigError(f"unknown key {k!r} in block {name!r}\nAvailable: {', '.join(closest(k, _KEYS))}")
        kw[_KEYS[k]] = v
    for req in ("InputFiles", "ProcessType", "ProcessName"):
        if _KEYS[req] not in kw:
            raise ConfigError(f"block {name!r} needs the key {req!r}")
    types = _as_list(kw.pop("process_type"), "ProcessType")
    names = _as_list(kw.pop("process_name"), "ProcessName")
    plist = kw.pop("process_list", None) or {}
    if len(types) != len(names):
        raise ConfigError(f"ProcessType has {len(types)} entries but ProcessName has {len(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"ProcessName has duplicate names: {names}")
    extra = set(plist) - set(names)
    if extra:
        raise ConfigError(f"ProcessList has block(s) {sorted(extra)} that are not in ProcessName {names}")
    fillers = tuple(FillerConfig(str(n), str(t), dict(plist.get(n) or {})) for n, t in zip(names, types))
    ra = kw.get("random_access", 0)
    if isinstance(ra, bool):
        kw["random_access"] = 2 if ra else 0
    kw["input_files"] = tuple(str(p) for p in _as_list(kw["input_files"], "InputFiles"))
    for key, typ in (("verbosity", int), ("random_seed", int), ("num_threads", int), ("num_storage", int)):
        if key in kw:
            try:
                kw[key] = typ(kw[key])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key} must be an integer, but got {kw[key]!r}") from err
    if "batch_timeout" in kw:
        kw["batch_timeout"] = float(kw["batch_timeout"])
    kw["enable_filter"] = bool(kw.get("enable_filter", False))
    return ProcessorConfig(fillers=fillers, **kw)


def _from_mapping(d: dict) -> ProcessorConfig:
    if "ProcessType" in d or "InputFiles" in d:
        return _from_block("ThreadProcessor", d)
    if len(d) == 1:
        (name, block), = d.items()
        return _from_block(str(name), block)
    raise ConfigError(
        f"expected one ThreadProcessor block (e.g. {{'ThreadProcessor': {{...}}}}), but got keys {sorted(d)}"
    )


def _parse_text(text: str, origin: str) -> dict:
    import yaml

    errors = []
    try:
        data = yaml.safe_load(text)
        if isinstance(data, dict):
            return data
        errors.append(f"YAML gave {type(data).__name__}, not a mapping")
    except yaml.YAMLError as err:
        errors.append(f"not YAML ({str(err).splitlines()[0]})")
    try:
        return parse_pset(text)
    except ConfigError as err:
        errors.append(f"not PSet text ({err})")
    raise ConfigError(f"cannot parse the configuration {origin}: " + "; ".join(errors))


def load_processor_config(source, **overrides) -> ProcessorConfig:
    """Load a ThreadProcessor configuration.

    Parameters
    ----------
    source : ProcessorConfig, dict, str or Path
        A config object; a dict (``{"ThreadProcessor": {...}}`` or the block itself); a path to
        a YAML or larcv PSet (``.cfg``) file; or YAML / PSet text.
    **overrides
        Fields of :class:`ProcessorConfig` to replace, e.g. ``input_files=["a.h5"]``.

    Returns
    -------
    ProcessorConfig

    Raises
    ------
    ConfigError
        Unknown key (with the closest names), missing key, bad value, unparsable text.
    """
    if isinstance(source, ProcessorConfig):
        cfg = source
    elif isinstance(source, dict):
        cfg = _from_mapping(source)
    elif isinstance(source, (str, Path)):
        text = str(source)
        path = Path(text)
        if "\n" not in text and "{" not in text and len(text) < 4096 and path.suffix and path.exists():
            cfg = _from_mapping(_parse_text(path.read_text(), f"in file {path}"))
        elif "\n" not in text and "{" not in text and path.suffix in (".yaml", ".yml", ".cfg"):
            raise ConfigError(f"configuration file not found: {text!r}")
        else:
            cfg = _from_mapping(_parse_text(text, "text"))
    else:
        raise ConfigError(f"configuration must be a dict, a path or text, but got {type(source).__name__}")
    if overrides:
        if "input_files" in overrides:
            overrides["input_files"] = tuple(str(p) for p in _as_list(overrides["input_files"], "input_files"))
        unknown = set(overrides) - set(ProcessorConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown override(s) {sorted(unknown)}")
        cfg = replace(cfg, **overrides)
    return cfg


def cosmic_tagger_config(
    files,
    *,
    downsample: int = 1,
    image_producer: str = "sbndwire",
    label_producer: str | None = "sbnd_cosmicseg",
    random_access: int = 2,
    num_threads: int = 2,
    num_storage: int | None = None,
    seed: int = 0,
    max_voxels: int | None = None,
) -> dict:
    """Return the config dict that fills CosmicTagger's ``image`` and ``label`` batches.

    ``image``: float32 [B, 3, H, W], charge average-pooled by ``2**downsample``;
    ``label``: int64 [B, 3, H, W], labels (0 background, 1 cosmic, 2 neutrino) max-pooled;
    H = number_of_voxels[1] >> downsample, W = number_of_voxels[0] >> downsample
    (1280 x 2048 for SBND at downsample 0).  Source: CosmicTagger ``src/utils/core/larcvio``
    (sparse2d ``sbndwire`` / ``sbnd_cosmicseg``, densified, downsample by pooling).
    ``label_producer=None`` fills ``image`` only (files without truth labels).

    With ``max_voxels`` the same batches come sparse, for the sparse network: ``image`` and
    ``label`` are COO rows ``(batch, plane, y, x, value)`` of the dense batches' non-zero
    pixels (``BatchFillerSparseCOO2D`` with ``Pooling``), at most ``max_voxels`` per entry
    and plane (take :meth:`tpcflow.io.Larcv3Reader.max_voxels`, which always suffices).
    """
    files = _as_list(files, "files")
    fill = {"Channels": [0, 1, 2], "Downsample": int(downsample)}
    ptype = "BatchFillerSparseToDense2D"
    if max_voxels is not None:
        ptype = "BatchFillerSparseCOO2D"
        fill.update(Transpose=True, MaxVoxels=max(1, int(max_voxels)))
    process = {"image": {"Producer": image_producer, "Pooling": "mean", "DataType": "float32", **fill}}
    if label_producer is not None:
        process["label"] = {"Producer": label_producer, "Pooling": "max", "DataType": "int64", **fill}
    return {
        "ThreadProcessor": {
            "Verbosity": 2,
            "EnableFilter": False,
            "RandomAccess": int(random_access),
            "RandomSeed": int(seed),
            "InputFiles": [str(f) for f in files],
            "ProcessType": [ptype] * len(process),
            "ProcessName": list(process),
            "NumThreads": int(num_threads),
            "NumStorage": int(num_storage if num_storage is not None else max(2, 2 * num_threads)),
            "ProcessList": process,
        }
    }
