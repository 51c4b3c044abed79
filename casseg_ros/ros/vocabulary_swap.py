"""A run-time vocabulary: embedded on a thread of its own, swapped in by the worker, then answered.

`~/set_vocabulary` must never stall a camera, and the executor thread that runs its callback also
takes every camera's frames. So the callback only `submit`s the request and goes back to the
executor; this module's embedding thread checks the request and embeds the names with the text
provider loaded at configure (`open`: the local MiniLM takes seconds to load, its embedding of a
few names tens of milliseconds), hands the vocabulary to the worker, which swaps it in between two
batches (`finish`: no frame sees half a swap), and only then answers (`on_done`, on the embedding
thread). While no worker runs (the node is not active) the embedding thread swaps it in itself: a
worker is attached and detached under the same lock, so the two never swap at once. Requests are
served one at a time, in order. On any error the old vocabulary stays and the error is the answer.
The embedding thread runs at nice 19 (on Linux a thread has a priority of its own, not its helpers):
on a loaded 2-core machine it then takes its ~0.1 s of CPU from idle time rather than from the
worker (4 cameras at 10 Hz, 16 swaps each way: the longest mask gap per swap, median 2.1 -> 1.45
frame periods; the swaps took 0.1-0.75 s instead of 0.1-0.3 s). ROS-free: the node turns `on_done`
into the service's response (`segment_node`).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from casseg_ros.ros.vocabulary_request import BadVocabularyRequest, embed_request, parse_request
from casseg_ros.text import EmbeddingProvider, Vocabulary, get_provider

# How long a request waits for the worker to swap between two batches.
SWAP_TIMEOUT_S = 60.0
# The embedding thread's nice value: it yields the CPU to the worker and the executor.
EMBEDDING_NICE = 19


def _lower_priority() -> None:
    """The calling thread at EMBEDDING_NICE (torch's intra-op helper threads, shared with the
    worker, keep theirs: checked in /proc, a helper started during a niced thread's matmul had nice 0)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), EMBEDDING_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the default priority
        pass


class SwapOutcome(NamedTuple):
    """The answer to one request: the vocabulary now in use (None: the old one was kept), and why."""

    vocabulary: Vocabulary | None
    message: str


@dataclass
class _Swap:
    """A vocabulary waiting for the worker, and the answer the embedding thread waits for."""

    vocabulary: Vocabulary
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class VocabularySwap:
    def __init__(self, apply: Callable[[Vocabulary], None], timeout_s: float = SWAP_TIMEOUT_S) -> None:
        self._apply = apply  # swaps it in (raises, keeping the old one, when it cannot)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # guards _pending and _worker_attached
        self._pending: _Swap | None = None
        self._worker_attached = False
        self._provider: EmbeddingProvider | None = None
        self._provider_error: str | None = None
        self._jobs: ThreadPoolExecutor | None = None
        self._closing = False

    # ------------------------------------------------------------------ configure / cleanup
    def open(self, provider: str | EmbeddingProvider) -> str | None:
        """Load the text provider (`EmbeddingProvider.load`) and start the embedding thread. Returns
        why the provider cannot embed, or None; requests are then answered with that reason (a
        checkpoint whose vocabulary came from a tool or a test cannot embed new names)."""
        self.close()
        self._provider, self._provider_error = None, None
        name = provider.name if isinstance(provider, EmbeddingProvider) else provider
        try:
            loaded = get_provider(provider)
            loaded.load()
            self._provider = loaded
        except Exception as exc:  # noqa: BLE001 - any set-up failure is the answer to later requests
            self._provider_error = f"text provider {name!r} failed: {type(exc).__name__}: {exc}"
        self._closing = False
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casseg_vocabulary",
                                        initializer=_lower_priority)
        return self._provider_error

    def close(self) -> None:
        """Stop the embedding thread: the request being embedded finishes and is answered, the ones
        queued behind it are answered as refused."""
        jobs, self._jobs = self._jobs, None
        if jobs is not None:
            self._closing = True
            jobs.shutdown(wait=True)
        self._provider = None

    @property
    def provider(self) -> EmbeddingProvider | None:
        return self._provider

    @property
    def waiting(self) -> bool:
        """A vocabulary is embedded and waits for the worker."""
        return self._pending is not None

    # ------------------------------------------------------------------ requests (any thread)
    def submit(self, request: Any, on_done: Callable[[SwapOutcome], None]) -> None:
        """Queue a SetVocabulary request and return at once; `on_done(outcome)` is called on the
        embedding thread once the vocabulary is swapped in (or was kept). `on_done` must not raise."""
        jobs = self._jobs
        if jobs is None:
            on_done(SwapOutcome(None, "vocabulary kept: not configured"))
            return
        try:
            jobs.submit(self._serve, request, on_done)
        except RuntimeError:  # closed meanwhile
            on_done(SwapOutcome(None, "vocabulary kept: not configured"))

    def _serve(self, request: Any, on_done: Callable[[SwapOutcome], None]) -> None:
        try:
            outcome = self._embed_and_swap(request)
        except Exception as exc:  # noqa: BLE001 - a bug must still be answered
            outcome = SwapOutcome(None, f"vocabulary kept: {type(exc).__name__}: {exc}")
        on_done(outcome)

    def _embed_and_swap(self, request: Any) -> SwapOutcome:
        if self._closing:
            return SwapOutcome(None, "vocabulary kept: the node is cleaning up")
        t0 = time.perf_counter()
        try:
            parsed = parse_request(request)
            if self._provider is None:
                raise BadVocabularyRequest(self._provider_error or "no text provider")
            vocabulary = embed_request(parsed, self._provider)
        except BadVocabularyRequest as exc:
            return SwapOutcome(None, f"vocabulary kept: {exc}")
        embed_s = time.perf_counter() - t0
        error = self._hand_over(vocabulary)
        if error:
            return SwapOutcome(None, f"vocabulary kept: {error}")
        return SwapOutcome(vocabulary, f"{len(vocabulary.names)} classes ({self._provider.name} embeddings in "
                                       f"{embed_s:.2f} s), swapped in {time.perf_counter() - t0 - embed_s:.3f} s")

    def _hand_over(self, vocabulary: Vocabulary) -> str | None:
        """To the worker, or swapped in here while none runs; waits for the swap. None, or why not."""
        swap = _Swap(vocabulary)
        with self._lock:
            if self._worker_attached:
                self._pending = swap
            else:  # under the lock: no worker can start meanwhile
                self._swap_in(swap)
        if not swap.done.wait(self._timeout_s):
            with self._lock:
                if self._pending is swap:
                    self._pending = None
                    return "the worker did not swap in time"
            swap.done.wait()  # the worker took it just now: its answer comes
        return swap.error

    # ------------------------------------------------------------------ the worker
    def attach_worker(self) -> None:
        """A worker is about to start: from now on it swaps (call before it takes its first batch)."""
        with self._lock:
            self._worker_attached = True

    def detach_worker(self) -> None:
        """The worker has stopped: a swap it left waiting is done here, later ones by the embedding thread."""
        with self._lock:
            self._worker_attached = False
            swap, self._pending = self._pending, None
            if swap is not None:
                self._swap_in(swap)

    def finish(self) -> None:
        """Worker thread, between batches: swap in what is waiting, if anything."""
        with self._lock:
            swap, self._pending = self._pending, None
        if swap is not None:
            self._swap_in(swap)

    def _swap_in(self, swap: _Swap) -> None:
        try:
            self._apply(swap.vocabulary)
        except Exception as exc:  # noqa: BLE001 - the backend refused: the old vocabulary stays
            swap.error = f"{type(exc).__name__}: {exc}"
        finally:
            swap.done.set()
