"""Training logs: a CSV of metrics, TensorBoard scalars, and a tqdm bar with img/s and loss.

Only rank 0 writes; other ranks get a logger whose methods do nothing.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Append metric rows to ``<run_dir>/metrics.csv`` and ``<run_dir>/tensorboard``.

    Parameters
    ----------
    run_dir : path
    enabled : bool
        False on ranks other than 0.
    progress_total : int or None
        Length of the tqdm bar; None disables the bar.
    initial : int
        The iteration the run starts at (0, or the checkpoint it resumed from).  Rows of a
        previous run after it (written after its last checkpoint, and about to be computed
        again) are removed from ``metrics.csv`` and purged from TensorBoard, so that no
        iteration appears twice.
    tensorboard : bool
        Also write TensorBoard event files.
    """

    def __init__(self, run_dir, *, enabled=True, progress_total=None, initial=0, tensorboard=True, desc="train"):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._bar = None
        self._csv_path = self.run_dir / "metrics.csv"
        self._columns: list[str] | None = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._csv_path.exists() and self._csv_path.stat().st_size:
            self._columns = self._keep_rows_up_to(int(initial))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=int(initial) + 1)
        if progress_total is not None:
            from tqdm import tqdm

            self._bar = tqdm(total=progress_total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)

    def _keep_rows_up_to(self, iteration: int) -> list[str] | None:
        """Rewrite metrics.csv (atomically) without the rows after ``iteration``; return its header."""
        from tpcflow import atomic

        with self._csv_path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return None
        header, body = rows[0], rows[1:]
        col = header.index("iteration") if "iteration" in header else None
        kept = [r for r in body if col is None or not r or int(float(r[col])) <= iteration]
        if len(kept) != len(body):
            with atomic.atomic_path(self._csv_path) as tmp, tmp.open("w", newline="") as out:
                csv.writer(out).writerows([header, *kept])
        return header

    def log(self, iteration: int, split: str, metrics: dict[str, float]) -> None:
        """Write one row (``iteration``, ``split`` and the metrics) to CSV and TensorBoard."""
        if not self.enabled:
            return
        row = {"iteration": iteration, "split": split, **{k: float(v) for k, v in metrics.items()}}
        if self._columns is None:
            self._columns = list(row)
            with self._csv_path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self._columns)
        with self._csv_path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(c, "") for c in self._columns])
        if self._writer is not None:
            for k, v in metrics.items():
                if not math.isnan(float(v)):
                    self._writer.add_scalar(f"{split}/{k}", float(v), iteration)

    def progress(self, n: int = 1, **postfix) -> None:
        """Advance the bar by ``n`` and show ``postfix`` (e.g. loss=..., img_s=...)."""
        if self._bar is not None:
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)

    def write(self, text: str) -> None:
        """Print a line without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
