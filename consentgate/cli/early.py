"""Remember a SIGTERM that arrives while a worker is still starting.

Imported first by the command line, before the heavy imports: until a worker installs its own
handler (``options.stop_on_signals``), a SIGTERM is recorded here instead of killing the process
mid-start, and the worker stops as soon as it can. Other commands restore the default action.
"""

from __future__ import annotations

import signal
from types import FrameType

RECEIVED: list[int] = []


def _remember(signum: int, frame: FrameType | None) -> None:
    RECEIVED.append(signum)


signal.signal(signal.SIGTERM, _remember)
