"""Run fleet tasks on Dask distributed: a local cluster of worker processes, or an existing cluster.

Local cluster (default): `workers` processes (each under a Dask nanny), one task at a time each,
every socket on 127.0.0.1 (scheduler, workers, nannies, the scheduler's HTTP endpoint on a random
port), no dashboard. Each worker process is pinned to its own share of the cores (`CoreShare`):
the backends size their thread pools from the cores a process may use
(`casseg_ros.runtime.base.physical_cpu_count`), so N workers on C cores run C/N threads each and
the total stays C.

Existing cluster (`scheduler="tcp://host:8786"`): the same tasks are submitted to it; its workers
need casseg_ros installed and the bags, model and output folder at the same paths (a shared
file system). Their threads and retries are that cluster's settings.

Faults: a task whose worker dies (killed, out of memory) is rescheduled by Dask on another worker
(`distributed.scheduler.allowed-failures` = 1 on the local cluster: one retry, then the task is
reported failed, KilledWorker). A task's result is taken from its future only, so a bag is counted
once however often it ran. Ctrl-C cancels the futures and closes the cluster (its worker processes
end); the caller then removes what the killed attempts left (`task.remove_partial_outputs`).
"""
from __future__ import annotations

import os
import signal
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import dask
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin
from tqdm import tqdm

LOOPBACK = "127.0.0.1"
# Scheduler settings of the local cluster: a task whose worker died is retried once, elsewhere;
# a worker holds only the task it runs (the others wait on the scheduler), so a worker's death
# counts against that one bag and a long bag never holds a queue behind it.
LOCAL_SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}


def core_shares(workers: int, threads: int | None = None) -> list[list[int]]:
    """Cores of each local worker: the first `threads` cores this process may use (default: all),
    split into equal contiguous shares (workers beyond the cores share them round-robin)."""
    cores = sorted(os.sched_getaffinity(0))
    cores = cores[: max(1, threads)] if threads else cores
    per = max(1, len(cores) // workers)
    return [[cores[(i * per + j) % len(cores)] for j in range(per)] for i in range(workers)]


class CoreShare(WorkerPlugin):
    """Pins local worker `name` (0..N-1, kept by a worker the nanny restarts) to its cores."""

    name = "casseg-core-share"

    def __init__(self, shares: list[list[int]]):
        self.shares = shares

    def setup(self, worker) -> None:
        cores = self.shares[int(worker.name) % len(self.shares)]
        # Every thread of the process (sched_setaffinity acts on one thread); threads started
        # later (the task's, torch's) inherit the mask from the thread that starts them.
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cores)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started meanwhile (the local workers) inherit SIGINT ignored, so Ctrl-C in a
    terminal reaches the driver alone, which cancels the work and closes the cluster in order
    (instead of every worker's event loop dying with a traceback)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def dask_client(workers: int, threads: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A client of `scheduler`, or of a new local cluster of `workers` processes on loopback."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with dask.config.set(LOCAL_SCHEDULER_CONFIG), _sigint_ignored():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=LOOPBACK,
                               dashboard_address=None,
                               # the scheduler's HTTP endpoint (health, metrics) always listens:
                               # on loopback, on a free port, never the fixed 8787
                               scheduler_kwargs={"dashboard_address": f"{LOOPBACK}:0"})
    with cluster, Client(cluster) as client:
        client.register_plugin(CoreShare(core_shares(workers, threads)))
        yield client


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_on_dask(fn: Callable[[Any], dict], tasks: Sequence[Any], failed: Callable[[Any, str], dict], *,
                workers: int, threads: int | None = None, scheduler: str | None = None,
                progress: bool = True) -> list[dict]:
    """`fn(task)` for every task on Dask; results in task order. A task whose future fails (its
    worker died twice, or `fn` raised) gets `failed(task, reason)`. Ctrl-C: futures cancelled,
    cluster closed, KeyboardInterrupt raised."""
    results: list[dict | None] = [None] * len(tasks)
    if not tasks:
        return []
    run_id = uuid.uuid4().hex[:8]  # keys unique on a shared scheduler
    with dask_client(workers, threads, scheduler) as client:
        futures = {client.submit(fn, task, key=f"casseg-replay-{run_id}-{i}", pure=False): i
                   for i, task in enumerate(tasks)}
        frames = 0
        bar = tqdm(total=len(tasks), unit="bag", desc="fleet", disable=not progress)
        try:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker, or an error inside fn
                    results[i] = failed(tasks[i], _reason(exc))
                frames += results[i].get("frames_processed", 0)
                bar.set_postfix(frames=frames, refresh=False)
                bar.update()
        except KeyboardInterrupt:
            client.cancel(list(futures), force=True)
            raise
        finally:
            bar.close()
    return results
