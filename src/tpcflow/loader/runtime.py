"""Workers, queues and slot states of a running ThreadProcessor (the part that must be shut down).

NOTE [ Loader shutdown ]
The runtime is a separate object from :class:`~tpcflow.loader.processor.ThreadProcessor`
so that ``weakref.finalize(processor, runtime.shutdown)`` can run without keeping the
processor alive.  ``shutdown`` is idempotent and bounded: it sends one ``None`` per
worker, joins them for up to 3 s in all, then terminates (and finally kills) what is left, and
stops the collector thread.  It runs on ``stop_manager()``, when the processor is garbage
collected, and at interpreter exit (``weakref.finalize`` registers with atexit).  Worker
processes are daemonic, ignore SIGINT (Ctrl-C reaches only the consumer, which then shuts
them down), and exit by themselves when their parent process dies.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from tpcflow.errors import ServiceError
from tpcflow.loader.storage import SlotState
from tpcflow.loader.worker import FillTask

__all__ = ["Runtime", "WorkerDiedError"]


class WorkerDiedError(ServiceError):
    """A worker process exited while minibatches were being filled."""


class Runtime:
    """Slot states, task dispatch and result collection for one storage allocation."""

    def __init__(self, layout, mm, num_storage: int):
        self.layout = layout
        self.mm = mm
        self.views = None
        self.states = np.full(num_storage, int(SlotState.EMPTY), dtype=np.int64)
        self.seq = np.full(num_storage, -1, dtype=np.int64)
        self.tags: list = [None] * num_storage
        self.tasks: list = [None] * num_storage
        self.cond = threading.Condition()
        self.workers: list = []
        self.worker_pids: list[int] = []  # process ids (kept after shutdown, for checks)
        self.task_q = None
        self.result_q = None
        self.collector: threading.Thread | None = None
        self.stopping = False
        self.error: BaseException | None = None
        self.gen = 0
        self.dispatch_seq = 0
        self.consume_seq = 0
        self.plan = None
        self.auto = False
        self.sync_fill = None  # callable(slot, entries, tag) when NumThreads == 0
        self.describe = lambda entries: ""

    # -- dispatch ----------------------------------------------------------------
    def dispatch(self, limit: int | None = None) -> int:
        """Give free slots (EMPTY / RELEASED) the next batches of the plan; return how many."""
        sent = 0
        with self.cond:
            if self.error is not None or self.stopping or self.plan is None:
                return 0
            free = [s for s in range(len(self.states)) if self.states[s] in (SlotState.EMPTY, SlotState.RELEASED)]
            todo = []
            for s in free:
                if limit is not None and sent >= limit:
                    break
                try:
                    tag, entries = next(self.plan)
                except StopIteration:
                    self.plan = None
                    break
                seq = self.dispatch_seq
                self.dispatch_seq += 1
                self.states[s] = SlotState.FILLING
                self.seq[s] = seq
                self.tags[s] = tag
                self.tasks[s] = np.asarray(entries, dtype=np.int64)
                todo.append(FillTask(s, seq, self.gen, self.tasks[s], tag))
                sent += 1
        for task in todo:
            if self.sync_fill is not None:
                self._fill_inline(task)
            else:
                self.task_q.put(task)
        return sent

    def _fill_inline(self, task) -> None:
        s, seq, gen, entries, tag = task
        try:
            self.sync_fill(s, entries, tag)
        except Exception as err:  # noqa: BLE001 - same path as a worker error
            self.on_result(("error", -1, (s, seq, gen, err)))
            return
        self.on_result(("done", -1, (s, seq, gen)))

    # -- results -----------------------------------------------------------------
    def on_result(self, msg) -> None:
        kind, wid, payload = msg
        with self.cond:
            if kind in ("done", "error"):
                s, seq, gen = payload[:3]
                if gen != self.gen or self.seq[s] != seq:
                    self.states[s] = SlotState.EMPTY  # a task of a plan that was replaced
                elif kind == "done":
                    self.states[s] = SlotState.FILLED
                else:
                    self.error = payload[3]
                    self.states[s] = SlotState.EMPTY
            elif kind == "fatal":
                self.error = payload
            self.cond.notify_all()
        if kind in ("done", "error") and self.auto:
            self.dispatch()

    def check_workers(self) -> None:
        if self.stopping or self.error is not None:
            return
        for wid, w in enumerate(self.workers):
            if not w.is_alive():
                filling = [s for s in range(len(self.states)) if self.states[s] == SlotState.FILLING]
                what = "; ".join(self.describe(self.tasks[s]) for s in filling) or "no batch in flight"
                code = getattr(w, "exitcode", None)
                with self.cond:
                    self.error = WorkerDiedError(
                        f"loader worker {wid} (pid {getattr(w, 'pid', None)}) died with exit code {code} "
                        f"while filling: {what}"
                    )
                    self.cond.notify_all()
                return

    def collect_loop(self) -> None:
        last_check = 0.0
        while not self.stopping:
            try:
                msg = self.result_q.get(timeout=0.1)
            except queue.Empty:
                msg = None
            except (EOFError, OSError):
                break
            if msg is not None:
                self.on_result(msg)
            now = time.monotonic()
            if now - last_check > 0.2:
                last_check = now
                self.check_workers()

    # -- consumer side -----------------------------------------------------------
    def wait_next(self, timeout: float) -> int:
        """Block until the slot holding sequence ``consume_seq`` is FILLED; return its id."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.error is not None:
                    raise self.error
                hit = np.flatnonzero((self.seq == self.consume_seq) & (self.states == SlotState.FILLED))
                if hit.size:
                    self.consume_seq += 1
                    return int(hit[0])
                pending = (self.seq == self.consume_seq) & (self.states == SlotState.FILLING)
                if not pending.any() and self.plan is None:
                    raise RuntimeError("no batch is being filled and the entry plan is exhausted")
                left = deadline - time.monotonic()
                if left <= 0:
                    s = np.flatnonzero(pending)
                    what = self.describe(self.tasks[int(s[0])]) if s.size else "no batch in flight"
                    raise TimeoutError(f"no minibatch after {timeout:.0f} s (BatchTimeout); waiting for {what}")
                self.cond.wait(min(left, 0.1))

    def restart(self, plan, dispatch: bool = True) -> None:
        """Replace the plan: filled and in-flight batches of the old plan are discarded."""
        with self.cond:
            self.gen += 1
            self.dispatch_seq = 0
            self.consume_seq = 0
            for s in range(len(self.states)):
                if self.states[s] == SlotState.FILLING:
                    self.seq[s] = -1  # stays FILLING until its (stale) result comes back
                else:
                    self.states[s] = SlotState.EMPTY
                    self.seq[s] = -1
            self.plan = plan
            self.error = None
        if dispatch:
            self.dispatch()

    # -- shutdown ----------------------------------------------------------------
    def shutdown(self, join_timeout: float = 3.0) -> None:
        """Stop every worker and the collector (idempotent, bounded; see NOTE above)."""
        if self.stopping:
            return
        self.stopping = True
        with self.cond:
            self.plan = None
            self.cond.notify_all()
        for _ in self.workers:
            try:
                self.task_q.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + join_timeout
        for w in self.workers:
            w.join(max(0.05, deadline - time.monotonic()))
        for w in self.workers:
            if w.is_alive() and hasattr(w, "terminate"):
                w.terminate()
                w.join(1.0)
                if w.is_alive():
                    w.kill()
                    w.join(1.0)
        if self.collector is not None and self.collector is not threading.current_thread():
            self.collector.join(2.0)
        for q in (self.task_q, self.result_q):
            if hasattr(q, "cancel_join_thread"):
                q.cancel_join_thread()
                q.close()
        for w in self.workers:
            if hasattr(w, "close") and not w.is_alive():
                try:
                    w.close()
                except ValueError:
                    pass
        self.workers = []
