"""The SIGINT disposition a child inherits, for tests of Ctrl-C and of stopping children.

A background job (`nohup make test &`, a CI runner, a supervisor) starts its children with SIGINT
ignored, and an ignored signal stays ignored across exec; a Python handler becomes SIG_DFL there.
Tests that start a process inside `sigint_disposition(signal.SIG_IGN)` see what such a parent
gives it, however the suite itself was started.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def sigint_disposition(handler: Any) -> Iterator[None]:
    """This process's SIGINT disposition inside the block (main thread only)."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
