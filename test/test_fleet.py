"""Fleet replay (casseg-replay over many bags on Dask): agreement between worker counts, the pooled
mIoU, a killed worker, re-runs, Ctrl-C, an existing cluster, and the loopback-only network rule.

One folder of generated bags (good, truncated, missing topic, labels renumbered) is replayed with
1 worker (through the CLI, the default thread count), 2 workers (through the Python API, with a
task function that kills its worker the first time it replays bag "a") and 4 workers (the CLI,
`--threads 1` given); the tests compare them. Every bag runs its backend with one fixed thread
count, a setting of the run recorded in fleet.json: with it the per-bag results are identical
whatever the worker count. What the thread count changes: the order of floating-point sums, so a
pixel whose two best classes tie to ~1e-7 may flip (1 of the truncated bag's 16 562 labelled
pixels went from one class to the other between 1 and 2 threads on an AVX-512/AMX Xeon); a run
with another thread count is therefore a different run (`test_the_thread_count_is_part_of_the_run`).
Every test that needs a fleet run (a local Dask cluster replaying the bags) is `slow`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from distributed import LocalCluster

from replay_helpers import make_demo_bag_module, ros_image, scene_pixels, tiny_context_checkpoint, write_bag
from signal_helpers import sigint_disposition

from casseg_ros.replay.bag import open_reader, read_bag_messages, typestore
from casseg_ros.replay.cli import main as replay_main
from casseg_ros.replay.fleet.dask_cluster import core_shares
from casseg_ros.replay.fleet.inputs import FleetInputError, collect_bags, output_names
from casseg_ros.replay.fleet.run import plan_tasks, run_fleet
from casseg_ros.replay.fleet.task import TASK_RECORD, run_bag_task
from casseg_ros.replay.metrics import InvalidLabel, IoUEvaluator
from casseg_ros.replay.offline.run import ReplayConfig

REPO = Path(__file__).resolve().parent.parent
IMAGE_TOPIC = "/camera/image_raw"
# Summary fields that do not depend on timing or on where the outputs went.
RESULT_FIELDS = ("name", "bag", "status", "frames_in_bag_read", "frames_processed", "frames_skipped",
                 "labelled_frames", "miou", "classes", "confusion_matrix")
VICTIM = "a"  # the bag whose first attempt loses its worker


def _renumbered_copy(src: Path, dst: Path, new_id: list[int]) -> Path:
    """The same recording with ground-truth ids renumbered (old id i -> new_id[i]) and its
    LabelInfo renumbered alike: mapped by name, it must score exactly as the original."""
    lut = np.arange(256, dtype=np.uint8)
    lut[: len(new_id)] = new_id
    messages = []
    for topic, _, msg in read_bag_messages(src):
        if topic == "/camera/labels":
            msg.data = lut[np.asarray(msg.data)]
        elif topic == "/camera/label_info":
            for c in msg.class_map:
                c.class_id = int(new_id[c.class_id])
        messages.append((topic, msg.__msgtype__, msg))
    return write_bag(dst, messages)


@pytest.fixture(scope="module")
def fleet_inputs(tmp_path_factory):
    """(folder of bags, tiny model)."""
    root = tmp_path_factory.mktemp("fleet")
    model = tiny_context_checkpoint(root / "tiny.safetensors")
    demo = make_demo_bag_module()
    bags, originals = root / "bags", root / "originals"
    (bags / "more").mkdir(parents=True)
    originals.mkdir()
    demo.build(bags / "a.mcap", frames=6, height=48, width=96, rate_hz=10.0)
    demo.build(bags / "more" / "b.mcap", frames=4, height=48, width=96, rate_hz=10.0)
    permutation = [(i * 4 + 3) % 9 for i in range(9)]  # a bijection of the 9 context classes
    _renumbered_copy(bags / "more" / "b.mcap", bags / "b_renumbered", permutation)
    # Large enough for several mcap chunks, so that the complete ones before the cut are salvaged.
    long = demo.build(originals / "long.mcap", frames=40, height=96, width=192, rate_hz=10.0)
    data = long.read_bytes()
    (bags / "truncated.mcap").write_bytes(data[: int(len(data) * 0.6)])  # recorder killed mid-write
    image, _ = scene_pixels()
    write_bag(bags / "missing_topic", [("/other/camera", "sensor_msgs/msg/Image", ros_image(10**9 + i, image))
                                       for i in range(2)])
    return bags, model


def _base_config(model: Path) -> ReplayConfig:
    return ReplayConfig(bag=Path(), out_dir=Path(), model_path=model, image_topic=IMAGE_TOPIC, progress=False)


def _cli_args(bags: Path, model: Path, out: Path, workers: int, *options: str) -> list[str]:
    return [str(bags), "--model", str(model), "--out", str(out), "--image-topic", IMAGE_TOPIC,
            "--workers", str(workers), "--no-progress", *options]


def kill_first_attempt_of_victim(task):
    """Task function of the 2-worker run: logs every attempt; the first attempt at VICTIM
    SIGKILLs its own worker process while the bag's output is being written."""
    log = Path(task.config.out_dir).parent.parent / "attempts.log"
    first = task.name == VICTIM and f"{VICTIM} " not in (log.read_text() if log.exists() else "")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"{task.name} {os.getpid()}\n")
    if first:
        threading.Thread(target=_kill_while_writing, args=(Path(task.config.out_dir),), daemon=True).start()
    return run_bag_task(task)


def _kill_while_writing(out_dir: Path) -> None:
    deadline = time.monotonic() + 120
    while not any(out_dir.glob(".bag.*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)


class SocketWatcher:
    """Every inet socket of this process tree seen while it runs, minus those open before."""

    def __init__(self):
        self.before = self._snapshot()
        self.seen: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def _snapshot() -> set:
        found = set()
        me = psutil.Process()
        for proc in [me] + me.children(recursive=True):
            try:
                for c in proc.net_connections(kind="inet"):
                    found.add((proc.pid, c.type, c.status, c.laddr, c.raddr or None))
            except psutil.Error:  # ended meanwhile
                pass
        return found

    def _poll(self):
        while not self._stop.is_set():
            self.seen |= self._snapshot()
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seen -= self.before


@pytest.fixture(scope="module")
def one_worker(fleet_inputs, tmp_path_factory) -> Path:
    bags, model = fleet_inputs
    out = tmp_path_factory.mktemp("one") / "out"
    assert replay_main(_cli_args(bags, model, out, workers=1)) == 1  # some bags are bad: exit 1
    return out


@pytest.fixture(scope="module")
def two_workers(fleet_inputs, tmp_path_factory):
    """(output folder, sockets seen) of the 2-worker run whose first attempt at VICTIM is killed."""
    bags, model = fleet_inputs
    out = tmp_path_factory.mktemp("two") / "out"
    tasks = plan_tasks(collect_bags([bags], exclude=out), out, _base_config(model))
    with SocketWatcher() as sockets:
        run_fleet(tasks, out, workers=2, progress=False, task_fn=kill_first_attempt_of_victim)
    return out, sockets.seen


@pytest.fixture(scope="module")
def four_workers(fleet_inputs, tmp_path_factory) -> Path:
    bags, model = fleet_inputs
    out = tmp_path_factory.mktemp("four") / "out"
    assert replay_main(_cli_args(bags, model, out, 4, "--threads", "1")) == 1
    return out


def _fleet(out: Path) -> dict:
    return json.loads((out / "fleet.json").read_text())


def _metrics(out: Path, bag: str) -> dict:
    return json.loads((out / "bags" / bag / "metrics.json").read_text())


def _results(out: Path) -> dict[str, dict]:
    """Per-bag results that must not depend on the engine, from each bag's task record."""
    results = {}
    for record_path in sorted((out / "bags").glob(f"*/{TASK_RECORD}")):
        summary = json.loads(record_path.read_text())["summary"]
        results[summary["name"]] = {k: summary[k] for k in RESULT_FIELDS}
        results[summary["name"]]["reason"] = (summary["reason"] or "").replace(str(out), "OUT")
    return results


@pytest.mark.slow
def test_one_two_and_four_workers_give_the_same_results(one_worker, two_workers, four_workers):
    out2, _ = two_workers
    one, two, four = _results(one_worker), _results(out2), _results(four_workers)
    assert set(one) == {"a", "b", "b_renumbered", "truncated", "missing_topic"}
    assert one == two == four
    # ... at one fixed thread count per bag, the run's setting (default 1), not a share of the cores.
    runs = [_fleet(out)["run"] for out in (one_worker, out2, four_workers)]
    assert [(run["workers"], run["threads_per_task"]) for run in runs] == [(1, 1), (2, 1), (4, 1)]
    for out in (one_worker, out2, four_workers):
        assert {_metrics(out, name)["backend"]["num_threads"] for name in ("a", "b", "truncated")} == {1}
    assert {n: r["status"] for n, r in one.items()} == {
        "a": "ok", "b": "ok", "b_renumbered": "ok", "truncated": "incomplete", "missing_topic": "failed"}
    assert "truncated or corrupt" in one["truncated"]["reason"] and 0 < one["truncated"]["frames_processed"] < 40
    assert f"'{IMAGE_TOPIC}' not in bag" in one["missing_topic"]["reason"]
    # Renumbered ground truth is mapped back by class name: the same frames score the same.
    assert one["b_renumbered"]["confusion_matrix"] == one["b"]["confusion_matrix"]

    f1, f2 = _fleet(one_worker), _fleet(out2)
    assert f1["iou"] == f2["iou"] and f1["status_counts"] == f2["status_counts"] == {
        "ok": 3, "incomplete": 1, "failed": 1}
    assert f1["frames_processed"] == sum(r["frames_processed"] for r in one.values())
    # The table lists the worst bags first: failed ones, then by mIoU ascending.
    order = [b["name"] for b in f1["per_bag"]]
    assert order[0] == "missing_topic"
    mious = [b["miou"] for b in f1["per_bag"][1:]]
    assert mious == sorted(mious)
    report = (one_worker / "report.md").read_text()
    assert "summed confusion matrix" in report and "not in bag" in report
    assert (one_worker / "figures" / "iou_per_class.png").stat().st_size > 0
    assert (one_worker / "figures" / "miou_per_bag.png").stat().st_size > 0


@pytest.mark.slow
def test_each_bag_folder_is_what_a_single_bag_run_writes(one_worker, fleet_inputs, tmp_path):
    bags, model = fleet_inputs
    single = tmp_path / "single"
    assert replay_main([str(bags / "a.mcap"), "--model", str(model), "--out", str(single),
                        "--image-topic", IMAGE_TOPIC, "--no-progress", "--threads", "1"]) == 0  # the fleet's
    fleet_bag = one_worker / "bags" / "a"
    files = {p.relative_to(fleet_bag) for p in fleet_bag.rglob("*")}
    assert files - {Path(TASK_RECORD)} == {p.relative_to(single) for p in single.rglob("*")}
    m_fleet, m_single = (json.loads((d / "metrics.json").read_text()) for d in (fleet_bag, single))
    assert m_fleet["iou"] == m_single["iou"] and m_fleet["frames_processed"] == m_single["frames_processed"]


def _labels_by_stamp(bag: Path) -> tuple[dict[int, np.ndarray], list[str]]:
    store = typestore()
    reader = open_reader(bag)  # salvages a truncated mcap as the replay does
    labels, names = {}, []
    try:
        conns = [c for c in reader.connections if c.topic in ("/camera/labels", "/camera/label_info")]
        for conn, _, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/camera/label_info":
                by_id = {c.class_id: c.class_name for c in msg.class_map}
                names = [by_id[i] for i in range(len(by_id))]
            else:
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                labels[stamp] = np.asarray(msg.data).reshape(msg.height, msg.width).astype(np.int64)
    finally:
        reader.close()
    return labels, names


@pytest.mark.slow
def test_aggregate_miou_is_the_miou_of_all_frames_pooled(one_worker, fleet_inputs):
    """Recomputed here from the output masks and the input labels, every frame in one evaluator."""
    bags, _ = fleet_inputs
    fleet = _fleet(one_worker)
    classes = json.loads((one_worker / "bags" / "a" / "metrics.json").read_text())["classes"]
    pooled = IoUEvaluator(classes)
    for entry in fleet["per_bag"]:
        if entry["status"] == "failed":
            continue
        labels, gt_names = _labels_by_stamp(Path(entry["bag"]))
        to_model = np.array([classes.index(n) for n in gt_names] + [255] * (256 - len(gt_names)))
        for topic, _, mask in read_bag_messages(one_worker / "bags" / entry["name"] / "bag", ["/casseg_ros/mask"]):
            stamp = mask.header.stamp.sec * 10**9 + mask.header.stamp.nanosec
            if stamp in labels:
                pooled.update(np.asarray(mask.data).reshape(mask.height, mask.width), to_model[labels[stamp]])
    expected = pooled.result()
    assert expected["frames"] == fleet["iou"]["frames"] > 0
    assert fleet["iou"]["per_class_iou"] == expected["per_class_iou"]
    assert fleet["iou"]["miou"] == expected["miou"]
    # ... which is not the mean of the per-bag mIoUs (bags of different sizes).
    per_bag = [b["miou"] for b in fleet["per_bag"] if b["miou"] is not None]
    assert fleet["iou"]["miou"] != pytest.approx(sum(per_bag) / len(per_bag), abs=1e-9)


@pytest.mark.slow
def test_killed_worker_bag_is_retried_once_elsewhere_and_counted_once(two_workers, one_worker):
    out, _ = two_workers
    attempts: dict[str, list[int]] = {}
    for line in (out / "attempts.log").read_text().split("\n"):
        if line:
            name, pid = line.split()
            attempts.setdefault(name, []).append(int(pid))
    assert len(attempts[VICTIM]) == 2 and len(set(attempts[VICTIM])) == 2  # a second, other process
    assert all(len(pids) == 1 for name, pids in attempts.items() if name != VICTIM)
    fleet = _fleet(out)
    assert fleet["bags"] == 5 and [b["name"] for b in fleet["per_bag"]].count(VICTIM) == 1
    assert fleet["frames_processed"] == _fleet(one_worker)["frames_processed"]
    assert not [p for p in (out / "bags").rglob(".*")], "leftovers of the killed attempt"


@pytest.mark.slow
def test_every_socket_the_run_opened_is_on_loopback(two_workers):
    _, sockets = two_workers
    listening = [s for s in sockets if s[2] == psutil.CONN_LISTEN]
    assert len(listening) >= 3, sockets  # scheduler + 2 workers at least: the watcher saw the cluster
    for pid, kind, status, laddr, raddr in sockets:
        assert laddr.ip == "127.0.0.1", (pid, kind, status, laddr)
        assert raddr is None or raddr.ip == "127.0.0.1", (pid, kind, status, laddr, raddr)


@pytest.mark.slow
def test_rerun_skips_complete_bags_and_redoes_the_others(one_worker, fleet_inputs, tmp_path):
    bags, model = fleet_inputs
    out = tmp_path / "out"
    shutil.copytree(one_worker, out)
    records = {p.parent.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob(f"bags/*/{TASK_RECORD}")}
    # Leftovers of an attempt killed mid-write (temp files of the atomic writers).
    (out / "bags" / "missing_topic" / ".bag.x1y2").mkdir()
    (out / "bags" / "truncated" / ".metrics.json.abc.tmp").write_text("{")
    assert replay_main(_cli_args(bags, model, out, workers=1)) == 1
    fleet = _fleet(out)
    assert fleet["run"]["bags_reused"] == 3 and fleet["run"]["bags_run"] == 2
    assert {b["name"] for b in fleet["per_bag"] if b["reused"]} == {"a", "b", "b_renumbered"}
    for name, (data, mtime) in records.items():
        record = out / "bags" / name / TASK_RECORD
        unchanged = record.read_bytes() == data and record.stat().st_mtime_ns == mtime
        assert unchanged == (name in ("a", "b", "b_renumbered")), name
    assert not [p for p in (out / "bags").rglob(".*")]
    assert _results(out) == _results(one_worker) and fleet["iou"] == _fleet(one_worker)["iou"]


@pytest.mark.slow
def test_same_command_runs_on_an_existing_cluster(one_worker, fleet_inputs, tmp_path):
    bags, model = fleet_inputs
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        assert replay_main([str(bags / "a.mcap"), str(bags / "b_renumbered"), "--model", str(model), "--out", str(out),
                            "--image-topic", IMAGE_TOPIC, "--scheduler", cluster.scheduler_address,
                            "--no-progress"]) == 0
    assert _fleet(out)["run"]["engine"] == f"Dask scheduler {cluster.scheduler_address}"
    expected = _results(one_worker)
    assert _results(out) == {name: expected[name] for name in ("a", "b_renumbered")}


def _alive(pids: list[int], timeout: float) -> list[str]:
    """Command lines of the processes still running after `timeout` seconds."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [" ".join(p.cmdline()) for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_leaves_no_partial_file(fleet_inputs, tmp_path):
    bags, model = fleet_inputs
    folder, out = tmp_path / "bags", tmp_path / "out"
    # A bag long enough to be interrupted mid-write, and a short one.
    make_demo_bag_module().build(folder / "long.mcap", frames=600, height=48, width=96, rate_hz=10.0)
    shutil.copy(bags / "a.mcap", folder / "a.mcap")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    # Started as a background job or a CI runner starts it, with SIGINT ignored: Ctrl-C must still work.
    with sigint_disposition(signal.SIG_IGN):
        proc = subprocess.Popen([sys.executable, "-m", "casseg_ros.replay.cli", *_cli_args(folder, model, out, 2)],
                                cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not any((out / "bags").glob("long/.bag.*")) and time.monotonic() < deadline:  # being written
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.01)
        group = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not _alive(group, timeout=10)
    assert not [p for p in out.rglob(".*")], "half-written files left"
    for path in out.rglob("*.json"):
        json.loads(path.read_text())  # every file that exists is complete
    assert not (out / "fleet.json").exists()


@pytest.mark.slow
def test_inputs_folders_list_files_and_names(fleet_inputs, tmp_path):
    bags, _ = fleet_inputs
    found = collect_bags([bags])
    assert [p.relative_to(bags).as_posix() for p in found] == [
        "a.mcap", "b_renumbered", "missing_topic", "more/b.mcap", "truncated.mcap"]
    listing = tmp_path / "bags.txt"
    listing.write_text(f"# recordings\n{bags / 'a.mcap'}\n\n{bags / 'more'}  # a folder\n{bags / 'a.mcap'}\n")
    assert collect_bags([listing, bags / "a.mcap"]) == [bags / "a.mcap", bags / "more" / "b.mcap"]
    assert collect_bags([bags], exclude=bags / "more") == [p for p in found if p.parent != bags / "more"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FleetInputError, match="no rosbag2"):
        collect_bags([tmp_path / "empty"])
    twins = [tmp_path / "x" / "run.mcap", tmp_path / "y" / "run", bags / "a.mcap"]
    names = output_names(twins)
    assert names[2] == "a" and names[0] != names[1] and all(n.startswith("run-") for n in names[:2])
    assert output_names(twins) == names  # the same bag always gets the same folder


@pytest.mark.slow
def test_the_thread_count_is_part_of_the_run(one_worker, fleet_inputs, tmp_path):
    """Another --threads is another run: no bag is taken from the 1-thread run, each bag's backend
    runs 2 threads, and the results agree with 1 thread's but for pixels on a ~1e-7 tie."""
    bags, model = fleet_inputs
    out = tmp_path / "out"
    shutil.copytree(one_worker, out)
    assert replay_main([str(bags / "a.mcap"), str(bags / "more" / "b.mcap"), "--model", str(model), "--out", str(out),
                        "--image-topic", IMAGE_TOPIC, "--workers", "1", "--threads", "2", "--no-progress"]) == 0
    fleet = _fleet(out)
    assert fleet["run"]["threads_per_task"] == 2 and fleet["run"]["bags_reused"] == 0
    assert {_metrics(out, name)["backend"]["num_threads"] for name in ("a", "b")} == {2}
    one, two = _results(one_worker), _results(out)
    for name in ("a", "b"):
        same = {k: v for k, v in one[name].items() if k not in ("confusion_matrix", "miou")}
        assert {k: v for k, v in two[name].items() if k not in ("confusion_matrix", "miou")} == same
        cm1, cm2 = np.asarray(one[name]["confusion_matrix"]), np.asarray(two[name]["confusion_matrix"])
        assert cm1.sum() == cm2.sum() and np.abs(cm1 - cm2).sum() <= 2e-3 * cm1.sum(), name


def test_core_shares_give_each_worker_its_own_cores():
    cores = sorted(os.sched_getaffinity(0))
    assert core_shares(1, 1) == [cores[:1]]
    assert core_shares(len(cores), 1) == [[c] for c in cores]  # one core each
    assert core_shares(len(cores) + 1, 1)[-1] == [cores[0]]  # more workers than cores: shared round-robin
    assert core_shares(2, 2) == [sorted({cores[i % len(cores)] for i in (0, 1)}),
                                 sorted({cores[i % len(cores)] for i in (2, 3)})]


@pytest.mark.parametrize("k", [3, 150, 255])
def test_confusion_matrices_sum_to_the_pooled_evaluation(k):
    """Summed per-bag matrices score like the pooled frames, up to the 255 classes a mono8 mask
    holds (ADE20K's 150 included); 255 stays the ground truth's ignore id throughout."""
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, k + 1, (24, 32)), rng.integers(0, k, (24, 32))) for _ in range(5)]
    for pred, gt in frames:
        pred[0, 0] = 255 if k < 255 else 65535  # "unknown" predictions count against the ground-truth class
        gt[0, 1] = 255  # ignored
    names = [f"c{i}" for i in range(k)]
    pooled, first, second, summed = (IoUEvaluator(names) for _ in range(4))
    for i, (pred, gt) in enumerate(frames):
        pooled.update(pred, gt)
        (first if i < 2 else second).update(pred, gt)
    for part in (first, second):
        summed.add_confusion_matrix(part.result()["confusion_matrix"], part.frames)
    assert summed.result() == pooled.result()
    matrix = np.asarray(pooled.confusion_matrix())
    assert matrix.shape == (k + 1, k + 1) and matrix.sum() == 5 * (24 * 32 - 1)  # every pixel but the ignored
    assert matrix[:, k].sum() == sum(((pred >= k) & (gt != 255)).sum() for pred, gt in frames)
    with pytest.raises(ValueError, match="shape"):
        summed.add_confusion_matrix([[1]], 1)


def test_ground_truth_of_more_classes_than_the_ignore_id_allows_is_refused():
    """Class 255 would be the ignore id: 256 classes or more are a clear label note, not wrong IoU."""
    evaluator = IoUEvaluator([f"c{i}" for i in range(256)])
    with pytest.raises(InvalidLabel, match="256 classes"):
        evaluator.update(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64))
