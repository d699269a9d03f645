"""The run configuration of train / iotest / inference: frozen dataclasses, one per section.

The sections and key names follow CosmicTagger's hydra config (``run``, ``mode``,
``mode.optimizer``, ``data``, ``network``), so that a CosmicTagger command line such as
``run.id=test run.iterations=50 mode.optimizer.learning_rate=3e-4 data.downsample=1``
works unchanged.  Source: CosmicTagger ``src/config/{config,mode,data,network}.py``
(master, 156c480) and the issue's list of options.

Every field carries ``metadata["help"]``; a field with a closed set of values also
carries ``metadata["choices"]``.  ``tpcflow train --help`` prints them all.

The ``network`` section is not defined here: its fields are those of
``tpcflow.models.registry.NetworkConfig`` (a lower layer may not import torch), so
:class:`Config` only stores the preset name and the overrides; the train layer resolves
them with :func:`tpcflow.train.resolve.resolve_network`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from tpcflow.config.network import NetworkConfig, get_preset

__all__ = [
    "PRECISIONS",
    "PRECISION_ALIASES",
    "Config",
    "DataConfig",
    "ModeConfig",
    "NetworkSection",
    "OptimizerConfig",
    "RunConfig",
]

MODES = ("train", "iotest", "inference")
#: the one precision vocabulary (CosmicTagger's run.precision); see tpcflow.models.runtime
PRECISIONS = ("float32", "bfloat16", "mixed")
#: short names accepted everywhere a precision is (the services' historical fp32 / bf16 / fp16)
PRECISION_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "mixed", "float16": "mixed"}
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("flat", "one_cycle", "warmup_decay")
LOSS_SCHEMES = ("none", "light", "even", "focal")
COMPUTE_MODES = ("auto", "cpu", "gpu")


def _f(default: Any, help: str, choices: tuple | None = None):  # noqa: A002 - "help" reads best
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """``run.*``: what to run, for how long, where to write, on which device."""

    id: str = _f("test", "run name; outputs go to <output_dir>/<id>/")
    iterations: int = _f(50, "training iterations (optimizer steps); iotest/inference: minibatches (0 = whole file; inference default 0)")
    minibatch_size: int = _f(2, "GLOBAL minibatch size (split across distributed ranks)")
    aux_iterations: int = _f(10, "validate on data.aux_file every this many iterations (0 = never)")
    aux_minibatch_size: int = _f(2, "minibatch size of the validation set")
    output_dir: str = _f("runs", "parent directory of the run directories")
    compute_mode: str = _f("auto", "device: auto (GPU when present), cpu, gpu", COMPUTE_MODES)
    precision: str = _f("float32", "float32, bfloat16 (autocast) or mixed (fp16 autocast + GradScaler on GPU; bfloat16 on CPU)", PRECISIONS)
    channels_last: bool = _f(False, "use the channels_last memory format")
    compile: bool = _f(False, "wrap the network in torch.compile")
    activation_checkpointing: bool = _f(False, "recompute encoder/decoder activations in backward to save memory")
    seed: int = _f(0, "seed of torch, numpy and the data order")
    num_threads: int = _f(0, "torch intra-op threads (0 = torch default)")
    progress: bool = _f(True, "show a tqdm progress bar (img/s and loss)")
    resume: bool = _f(True, "resume from the newest checkpoint in the run directory if there is one")


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """``mode.optimizer.*``: optimiser, learning-rate schedule, loss weighting."""

    name: str = _f("adam", "optimizer", OPTIMIZERS)
    learning_rate: float = _f(3e-4, "peak learning rate")
    weight_decay: float = _f(0.0, "L2 weight decay (the reference's network.weight_decay=0.1 is never applied; here it is, when set)")
    momentum: float = _f(0.9, "SGD momentum")
    gradient_accumulation: int = _f(1, "minibatches per optimizer step; their losses are AVERAGED (reference bug 6.4 fixed)")
    lr_schedule: str = _f("flat", "flat, one_cycle (torch OneCycleLR over run.iterations) or warmup_decay (reference)", SCHEDULES)
    warmup_epochs: float = _f(1.0, "warmup_decay: linear warm-up length [epochs]")
    decay_start_epoch: float = _f(21.0, "warmup_decay: start of the exponential decay [epochs]")
    decay_rate: float = _f(0.999, "warmup_decay: lr = (lr - floor) * exp(-rate * (epoch - start)) + floor")
    lr_floor: float = _f(1e-4, "warmup_decay: start of the warm-up and floor of the decay")
    loss_balance_scheme: str = _f("focal", "pixel weights of the loss", LOSS_SCHEMES)


@dataclass(frozen=True, kw_only=True)
class ModeConfig:
    """``mode.*``: checkpointing, logging and inference outputs."""

    name: str = _f("train", "set by the sub-command", MODES)
    checkpoint_iteration: int = _f(500, "write a checkpoint every this many iterations (and at the end)")
    keep_checkpoints: int = _f(3, "keep the newest this many checkpoints")
    logging_iteration: int = _f(1, "log metrics (CSV, TensorBoard) every this many iterations")
    weights_location: str = _f("", "checkpoint (or TorchScript file) to load; inference defaults to the run's newest; "
                                   "train: initial weights of a new run (a 2D checkpoint starts a sparse network)")
    best_metric: str = _f("Average/mIoU", "validation metric that picks checkpoints/best.pt (loss: lowest, others: "
                          "highest; empty: no best checkpoint)")
    early_stopping: int = _f(0, "stop after this many validations without a better best_metric (0 = never)")
    output_file: str = _f("", "inference: larcv3 file of predictions (default <run dir>/predictions.h5)")
    event_displays: int = _f(4, "inference: write this many event-display PNGs")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"help": "optimizer section"})


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """``data.*``: input files and pre-processing."""

    file: str = _f("", "larcv3 training / inference file(s), comma-separated")
    aux_file: str = _f("", "larcv3 validation file(s), comma-separated ('' = no validation)")
    data_directory: str = _f("", "directory prefixed to relative data.file / data.aux_file")
    downsample: int = _f(1, "downsample by 2**downsample: images average-pooled, labels max-pooled")
    synthetic: bool = _f(False, "generate SBND-like events (tpcflow.sim.sbnd) into <run dir>/synthetic/ and read them "
                                "through the loader, instead of data.file")
    synthetic_events: int = _f(64, "synthetic: training events generated (validation: a quarter, other seed)")
    synthetic_seed: int = _f(1234, "synthetic: generator seed")
    image_producer: str = _f("sbndwire", "larcv3 sparse2d producer of the charge")
    label_producer: str = _f("sbnd_cosmicseg", "larcv3 sparse2d producer of the labels")
    shuffle: bool = _f(True, "shuffle the training entries every epoch")
    num_threads: int = _f(2, "batch loader threads")


@dataclass(frozen=True)
class NetworkSection:
    """``network=<preset>`` plus ``network.<field>=<value>`` overrides (checked by ``load_config``)."""

    preset: str = "uresnet"
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def resolve(self) -> NetworkConfig:
        """The :class:`~tpcflow.config.network.NetworkConfig` of this section: the preset with the overrides.

        Raises
        ------
        ConfigError
            Unknown preset or field, or a value NetworkConfig rejects.
        """
        return get_preset(self.preset).replace(**dict(self.overrides))


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole configuration of one run."""

    run: RunConfig = field(default_factory=RunConfig)
    mode: ModeConfig = field(default_factory=ModeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkSection = field(default_factory=NetworkSection)
