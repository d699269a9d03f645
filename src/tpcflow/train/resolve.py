"""The data sources and the run directory of a run, and the check that its images fit its network.

Device and precision: :mod:`tpcflow.models.runtime`; the network: ``cfg.network.resolve()``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tpcflow.config import Config
from tpcflow.errors import ConfigError, OutputError

__all__ = [
    "check_downsample_fits",
    "make_run_directory",
    "make_source",
    "resolve_network",
    "run_directory",
]


def resolve_network(cfg: Config):
    """Return the :class:`~tpcflow.config.network.NetworkConfig` of ``cfg.network`` (:meth:`NetworkSection.resolve`)."""
    return cfg.network.resolve()


def check_downsample_fits(shape: tuple[int, int], netcfg, downsample: int) -> None:
    """Raise ConfigError if the downsampled image ``shape`` (H, W) cannot be halved ``network_depth`` times.

    The run-level check, made before any data is read, with the fix in terms of ``data.downsample``;
    the network checks each input itself (:func:`tpcflow.models.uresnet.check_image_shape`).
    Source: CosmicTagger README, "the sum of network_depth and downsample_images must be
    less than 8, since 1280 pixels / 2^8 = 5".
    """
    depth = int(netcfg.network_depth)
    h, w = shape
    if h % (2**depth) or w % (2**depth) or h == 0 or w == 0:
        full_h, full_w = h << downsample, w << downsample
        ok_depth = min((h & -h).bit_length() - 1, (w & -w).bit_length() - 1) if h and w else 0
        raise ConfigError(
            f"image shape {h}x{w} (= {full_h}x{full_w} / 2**data.downsample={downsample}) cannot be halved "
            f"network.network_depth={depth} times (needs H and W divisible by {2**depth}).\n"
            f"Set network.network_depth<={ok_depth} or lower data.downsample "
            f"(data.downsample + network.network_depth must not exceed {ok_depth + downsample})"
        )


def run_directory(cfg: Config) -> Path:
    """``<run.output_dir>/<run.id>``."""
    return Path(cfg.run.output_dir) / cfg.run.id


def make_run_directory(cfg: Config) -> Path:
    """Create ``<run.output_dir>/<run.id>`` if needed, check it takes files, and return it.

    Raises
    ------
    OutputError
        Naming the folder, the two options and the reason (a file in the way, no permission...).
    """
    import tempfile

    path = run_directory(cfg)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OutputError(f"cannot write the run directory {path} (run.output_dir={cfg.run.output_dir}, "
                          f"run.id={cfg.run.id}): {err.strerror or err}") from None
    return path


def make_source(cfg: Config, which: str, *, rank=0, world_size=1, cycle=True, shuffle=None, labels=True,
                sparse=False):
    """Return the :class:`~tpcflow.train.data.Source` of ``data.file`` (``which="train"``) or ``data.aux_file`` ("aux").

    With ``data.synthetic=true`` the events are generated once into ``<run dir>/synthetic/`` and read
    through the same loader as files; ``data.file`` must then be empty (never silently ignored).
    Returns None for "aux" when no validation data is configured.  ``labels=False`` reads the charge only;
    ``labels=None`` reads the labels when the files have them.  ``sparse=True`` yields voxel
    minibatches for the sparse network, never densified (:class:`~tpcflow.train.data.FileSource`).
    """
    from tpcflow.train.data import FileSource, resolve_files, synthetic_file

    d = cfg.data
    if d.synthetic and d.file:
        raise ConfigError(f"data.synthetic=true and data.file={d.file} are both set (a run's config.yaml as --config "
                          "brings data.synthetic=true): set data.synthetic=false to read the file, or drop data.file")
    batch = cfg.run.minibatch_size if which == "train" else cfg.run.aux_minibatch_size
    shuffle = d.shuffle if shuffle is None else shuffle
    if d.synthetic:  # written once at the asked resolution, then read like any file
        n = d.synthetic_events if which == "train" else max(batch, d.synthetic_events // 4)
        seed = d.synthetic_seed if which == "train" else d.synthetic_seed + 1_000_003
        path = synthetic_file(run_directory(cfg) / "synthetic", n, seed, d.downsample)
        d = dataclasses.replace(d, file=str(path), downsample=0, image_producer="sbndwire",
                                label_producer="sbnd_cosmicseg")
        return FileSource([path], d, batch, seed=cfg.run.seed, rank=rank, world_size=world_size, cycle=cycle,
                          shuffle=shuffle, labels=labels, sparse=sparse)
    spec, key, batch_key = ((d.aux_file, "data.aux_file", "run.aux_minibatch_size") if which == "aux"
                            else (d.file, "data.file", "run.minibatch_size"))
    if not spec and which == "aux":
        return None
    files = resolve_files(spec, d.data_directory, what=key)
    try:
        return FileSource(files, d, batch, seed=cfg.run.seed, rank=rank, world_size=world_size, cycle=cycle,
                          shuffle=shuffle, labels=labels, sparse=sparse)
    except ConfigError as err:  # name the options behind it: a message from the loader knows neither
        raise ConfigError(f"{err}\n(reading {key}={spec} with {batch_key}={batch})") from None
