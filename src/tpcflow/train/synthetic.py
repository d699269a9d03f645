"""Events in memory as CosmicTagger minibatches: the ``data.synthetic=true`` dataset.

Events come from :func:`tpcflow.sim.sbnd.generate_events` (already generated at the
requested downsampling) and are kept sparse; each minibatch is densified on the fly
into CosmicTagger's layout [B, 3, H, W] with ``image[h, w] = dense[w, h]`` (see
:mod:`tpcflow.io.products`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tpcflow.errors import ProductNotFoundError
from tpcflow.io.products import Event, image_coordinates, image_shape

__all__ = ["EventArrays", "densify_events", "generate_arrays"]


class EventArrays:
    """Sparse charge and labels of N events, densified per minibatch.

    Parameters
    ----------
    events : sequence of Event
        Each holds ``sparse2d/<image_producer>`` and ``sparse2d/<label_producer>`` with 3 projections.
    image_producer, label_producer : str

    Attributes
    ----------
    shape : (H, W)
        Image shape per plane in CosmicTagger layout (H = meta.number_of_voxels[1]).
    event_ids : (N, 3) int64
        run / subrun / event of each event.
    metas : list of ImageMeta
        The charge product's metas (from the first event).

    Raises
    ------
    ProductNotFoundError
        If an event lacks one of the products.
    """

    def __init__(self, events: Sequence[Event], image_producer: str = "sbndwire", label_producer: str = "sbnd_cosmicseg"):
        keys = (f"sparse2d/{image_producer}", f"sparse2d/{label_producer}")
        self._planes: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        ids = []
        for i, ev in enumerate(events):
            for key in keys:
                if key not in ev.products:
                    raise ProductNotFoundError(key, available=ev.products.keys(), object_path=f"event {i}")
            image, label = (ev.products[k] for k in keys)
            planes = []
            for p_img, p_lab in zip(image, label):
                lab = np.zeros(len(p_img), dtype=np.uint8)
                # labels may cover a different voxel set than the charge: align by index
                pos = np.searchsorted(p_img.index, p_lab.index)
                ok = (pos < len(p_img)) & (p_img.index[np.minimum(pos, len(p_img) - 1)] == p_lab.index)
                lab[pos[ok]] = p_lab.values[ok].astype(np.uint8)
                planes.append((p_img.index.astype(np.int64), p_img.values.astype(np.float32), lab))
            self._planes.append(planes)
            ids.append(ev.event_id.as_tuple())
        if not self._planes:
            raise ValueError("EventArrays needs at least one event")
        self.metas = [p.meta for p in events[0].products[keys[0]]]
        self.shape = image_shape(self.metas[0].number_of_voxels)
        self.event_ids = np.asarray(ids, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self._planes)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Return (image float32 [B,3,H,W], label int64 [B,3,H,W]) for the given events."""
        h, w = self.shape
        image = np.zeros((len(indices), 3, h, w), dtype=np.float32)
        label = np.zeros((len(indices), 3, h, w), dtype=np.int64)
        nv = (w, h)
        for b, i in enumerate(indices):
            for p, (index, values, lab) in enumerate(self._planes[i]):
                hi, wi = image_coordinates(index, nv)
                image[b, p, hi, wi] = values
                label[b, p, hi, wi] = lab
        return image, label


def densify_events(events: Sequence[Event], image_producer: str = "sbndwire", label_producer: str = "sbnd_cosmicseg"):
    """Return (image, label, event_ids) of ``events`` as CosmicTagger arrays."""
    arrays = EventArrays(events, image_producer, label_producer)
    image, label = arrays.batch(range(len(arrays)))
    return image, label, arrays.event_ids


def generate_arrays(n: int, seed: int, downsample: int) -> EventArrays:
    """Generate ``n`` synthetic SBND events with :mod:`tpcflow.sim.sbnd` and wrap them."""
    from tpcflow.sim.sbnd import generate_events

    return EventArrays(list(generate_events(n, seed, downsample=downsample)))
