"""One start/stop lifecycle for the broker and the worker: a loop in a daemon thread, a stop event.

``run()`` loops until :meth:`ThreadLoop.stop` sets the event; :meth:`ThreadLoop.start` runs it
in a daemon thread; ``stop(join=True)`` waits at most :data:`JOIN_TIMEOUT` seconds, so that a
stuck loop never hangs the caller (the thread is a daemon: it dies with the process).
Source: the start/stop of pyzmq's ``zmq.devices`` background devices.
"""

from __future__ import annotations

import threading

__all__ = ["JOIN_TIMEOUT", "ThreadLoop"]

#: longest wait of stop(join=True) for the loop to finish [s]
JOIN_TIMEOUT = 10.0


class ThreadLoop:
    """Mixin: subclasses define ``run(**kwargs)``, which returns once :attr:`stopping` is set."""

    thread_name = "mdp"

    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def start(self, **run_kwargs) -> threading.Thread:
        """Run ``run(**run_kwargs)`` in a daemon thread and return the thread."""
        self._thread = threading.Thread(target=self.run, kwargs=run_kwargs, name=self.thread_name, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, join: bool = True) -> None:
        """Ask the loop to finish (thread-safe); with ``join``, wait up to JOIN_TIMEOUT for its thread."""
        self._stop.set()
        if join and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)

    def run(self, **kwargs) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
