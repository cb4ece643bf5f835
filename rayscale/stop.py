"""The stop request: SIGTERM (what `ray job stop` and schedulers send) or Ctrl-C asks the run to finish the current
stage, write a checkpoint and exit 143 or 130 (rayscale.failures.STOPPED); a second signal stops at once."""

from __future__ import annotations

import os
import signal
import threading

from rayscale.failures import STOPPED


class StopRequest:
    """Installed by the controller's loop, which checks `requested` between stages.

    Handlers can only be installed from the main thread; elsewhere (a test driving the trainer from a thread) the
    request simply never arrives.
    """

    def __init__(self) -> None:
        self.requested: str | None = None

    @classmethod
    def install(cls) -> StopRequest:
        stop = cls()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, stop._handle)
        return stop

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested:  # at once: no stage finishes, no checkpoint (the last one written stays)
            print(f"\nreceived {name} again: stopping now, without a checkpoint", flush=True)
            os._exit(STOPPED.get(name, STOPPED["SIGINT"]))
        self.requested = name
        print(f"\nreceived {self.requested}: finishing the current stage, then writing a checkpoint "
              "(send it again to stop at once)", flush=True)
