"""tpcflow.loader: minibatches for training, filled in the background.

* :class:`ThreadProcessor`: larcv's circular buffer of minibatches (``start_manager``,
  ``storage_status_array``, ``release_data``, ...) filled by worker processes in shared memory.
* :class:`BatchLoader`: epoch iterator over it, numpy or torch, sharded per rank.
* :func:`load_processor_config` / :func:`parse_pset` / :func:`cosmic_tagger_config`: configuration
  from YAML, dicts, or larcv PSet text.
* Batch fillers: :mod:`tpcflow.loader.fillers`; entry order: :mod:`tpcflow.loader.sampler`.

Two modules here import torch, and only when asked: ``tpcflow.loader.torch`` when a loader
is asked for tensors, and ``tpcflow.loader.root_torch`` (the ROOT ``DataGenerator`` as a
torch ``IterableDataset``).  Importing ``tpcflow.loader`` itself does not import torch.
"""

from tpcflow.loader.batch_loader import BatchLoader
from tpcflow.loader.config import FillerConfig, ProcessorConfig, cosmic_tagger_config, load_processor_config
from tpcflow.loader.processor import ThreadProcessor
from tpcflow.loader.pset import parse_pset
from tpcflow.loader.runtime import WorkerDiedError
from tpcflow.loader.sampler import EntrySampler
from tpcflow.loader.storage import SlotState
from tpcflow.loader.worker import BatchFillError

__all__ = [
    "BatchFillError",
    "BatchLoader",
    "EntrySampler",
    "FillerConfig",
    "ProcessorConfig",
    "SlotState",
    "ThreadProcessor",
    "WorkerDiedError",
    "cosmic_tagger_config",
    "load_processor_config",
    "parse_pset",
]
