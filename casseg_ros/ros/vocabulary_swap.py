"""A run-time vocabulary handed from the `~/set_vocabulary` service to the worker, one at a time.

The service thread embeds the names (`vocabulary_request`), then `request`s the swap and waits; the
worker `finish`es it between two batches (or the service thread itself while no worker runs), so
no frame sees half a swap. On any error the old vocabulary stays and the error is the answer.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from casseg_ros.ros.vocabulary_request import BadVocabularyRequest, vocabulary_from_request
from casseg_ros.text import Vocabulary


@dataclass
class _Swap:
    """A vocabulary waiting for the worker, and the answer the service thread waits for."""

    vocabulary: Vocabulary
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class VocabularySwap:
    def __init__(self, apply: Callable[[Vocabulary], None]) -> None:
        self._apply = apply  # swaps it in (raises, keeping the old one, when it cannot)
        self._lock = threading.Lock()  # one swap at a time; guards _pending
        self._pending: _Swap | None = None

    def embed_and_swap(self, request: Any, provider: str, timeout: float, finish_here: bool
                       ) -> tuple[Vocabulary | None, str]:
        """A SetVocabulary request embedded with `provider` (slow), then swapped in: (the vocabulary
        now in use, or None when the old one was kept; the service's answer)."""
        t0 = time.perf_counter()
        try:
            vocabulary = vocabulary_from_request(request, provider)
        except BadVocabularyRequest as exc:
            return None, f"vocabulary kept: {exc}"
        embed_s = time.perf_counter() - t0
        error = self.request(vocabulary, timeout, finish_here)
        if error:
            return None, f"vocabulary kept: {error}"
        return vocabulary, (f"{len(vocabulary.names)} classes ({provider} embeddings in {embed_s:.2f} s), "
                            f"swapped in {time.perf_counter() - t0 - embed_s:.3f} s")

    def request(self, vocabulary: Vocabulary, timeout: float, finish_here: bool) -> str | None:
        """Hand `vocabulary` over and wait up to `timeout` s for the swap; None, or why it failed.
        `finish_here`: no worker runs (not active), so no frame can be in flight: swap at once."""
        with self._lock:
            swap = _Swap(vocabulary)
            self._pending = swap
            if finish_here:
                self.finish()
            if not swap.done.wait(timeout):
                self._pending = None
                return "the worker did not swap in time"
        return swap.error

    def finish(self) -> None:
        """Worker thread, between batches: swap in what is waiting, if anything."""
        swap, self._pending = self._pending, None
        if swap is None:
            return
        try:
            self._apply(swap.vocabulary)
        except Exception as exc:  # noqa: BLE001 - the backend refused: the old vocabulary stays
            swap.error = f"{type(exc).__name__}: {exc}"
        finally:
            swap.done.set()
