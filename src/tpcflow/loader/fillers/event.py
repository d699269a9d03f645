"""Event-based fillers: image2d planes, and particle PID labels.

Sources: larcv ``BatchFillerImage2D`` (larcv2 ThreadIO), larcv3 ``BatchFillerPIDLabel.cxx``.
"""

from __future__ import annotations

import numpy as np

from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.loader.fillers.base import _REQUIRED, Filler

__all__ = ["Image2D", "PIDLabel"]


class Image2D(Filler):
    ptype = "image2d"
    params = {"Channels": None}

    def bind(self, products, metas, *, file_path=None):
        super().bind(products, metas, file_path=file_path)
        self._bind_channels()

    def shape(self, batch_size):
        return (batch_size, len(self.channels), *self.number_of_voxels)

    def fill(self, out, events, batch_size, flips=None):
        for b, ev in enumerate(events):
            by_id = {img.meta.projection_id: img for img in ev.products[self.key]}
            for c, pid in enumerate(self.channels):
                if pid not in by_id:
                    raise DataFormatError(f"{self.key} has no projection {pid}", entry=ev.entry)
                out[b, c] = by_id[pid].data


class PIDLabel(Filler):
    ptype = "particle"
    params = {"PdgClassList": _REQUIRED, "OneHot": True, "AllowUnknown": False}

    def __init__(self, name, process_type, cfg):
        super().__init__(name, process_type, cfg)
        self.pdgs = [int(p) for p in self.cfg["PdgClassList"]]
        if not self.pdgs:
            raise ConfigError(f"batch filler {name!r}: PdgClassList must not be empty")
        self.multi = process_type == "BatchFillerMultiLabel"

    def shape(self, batch_size):
        return (batch_size, len(self.pdgs)) if (self.cfg["OneHot"] or self.multi) else (batch_size,)

    def fill(self, out, events, batch_size, flips=None):
        out[...] = 0
        for b, ev in enumerate(events):
            pdg = ev.products[self.key].array["pdg"]
            hits = [k for k, p in enumerate(self.pdgs) if np.any(pdg == p)]
            if self.multi:
                out[b, hits] = 1
                continue
            first = [self.pdgs.index(int(p)) for p in pdg if int(p) in self.pdgs]
            if not first:
                if not self.cfg["AllowUnknown"]:
                    raise DataFormatError(
                        f"no particle of {self.key} has a pdg in PdgClassList {self.pdgs} (pdgs: {pdg.tolist()})",
                        entry=ev.entry,
                    )
                if not self.cfg["OneHot"]:
                    out[b] = -1 if out.dtype.kind in "if" else 0
                continue
            if self.cfg["OneHot"]:
                out[b, first[0]] = 1
            else:
                out[b] = first[0]
