"""The process toolkit: readiness waits read from the ROS graph, and a child always stopped."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import rclpy
from std_msgs.msg import String

from signal_helpers import sigint_disposition

from casseg_ros.processes import children as children_module
from casseg_ros.processes.children import ChildProcess, ChildProcesses, loopback_env, sigint_default
from casseg_ros.processes.readiness import GraphWatcher, ReadinessTimeout, wait_for, wait_for_matched_subscriptions


@pytest.fixture
def participants(ros_env):
    """Two rclpy contexts (= two DDS participants) in the test's private domain."""
    contexts = [rclpy.Context(), rclpy.Context()]
    for context in contexts:
        rclpy.init(context=context, domain_id=ros_env.domain_id)
    nodes = [rclpy.create_node(f"readiness_test_{i}", context=c) for i, c in enumerate(contexts)]
    yield nodes
    for node, context in zip(nodes, contexts):
        node.destroy_node()
        context.try_shutdown()


@pytest.mark.ros
def test_matched_subscription_wait_times_out_clearly_then_returns_once_matched(participants):
    writer_node, reader_node = participants
    pub = writer_node.create_publisher(String, "/readiness/topic", 10)
    t0 = time.monotonic()
    with pytest.raises(ReadinessTimeout, match="matched subscription.*on /readiness/topic"):
        wait_for_matched_subscriptions(pub, timeout=0.5)
    assert 0.5 <= time.monotonic() - t0 < 3.0
    reader_node.create_subscription(String, "/readiness/topic", lambda _: None, 10)
    assert wait_for_matched_subscriptions(pub, timeout=30.0) == 1


@pytest.mark.ros
def test_graph_watcher_waits_for_the_named_subscriber(participants, ros_env):
    _, other = participants
    with GraphWatcher(ros_env.domain_id, ros_env.env) as graph:
        other.create_subscription(String, "/readiness/outputs", lambda _: None, 10)
        # Another node's subscription is not the one asked for.
        with pytest.raises(ReadinessTimeout, match="/recorder_x on /readiness/outputs"):
            graph.wait_for_subscriber("/readiness/outputs", 1.0, node="/recorder_x")
        assert graph.wait_for_subscriber("/readiness/outputs", 30.0) == ["/readiness_test_1"]
        assert graph.wait_for_subscriber("/readiness/outputs", 1.0, node="/readiness_test_1")


def test_wait_ends_with_the_child_error_when_the_child_exits(tmp_path):
    child = ChildProcess("crasher", [sys.executable, "-c", "print('bad model'); raise SystemExit(3)"],
                         loopback_env(1), tmp_path / "crasher.log")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"crasher process exited with status 3(.|\n)*bad model"):
        wait_for(lambda: False, 30.0, "never", alive=child.check_alive)
    assert time.monotonic() - t0 < 10.0


# A background job (`nohup make test &`, a CI runner) starts everything with SIGINT ignored.
PARENTS = {"parent-ignores-sigint": signal.SIG_IGN, "parent-handles-sigint": signal.default_int_handler}


@pytest.mark.slow
@pytest.mark.parametrize("parent", PARENTS.values(), ids=PARENTS.keys())
@pytest.mark.parametrize("ignored, status", [((), -2), (("SIGINT",), -15), (("SIGINT", "SIGTERM"), -9)])
def test_stop_escalates_sigint_sigterm_sigkill(tmp_path, ignored, status, parent):
    code = ("import signal, sys, time\n"
            + "".join(f"signal.signal(signal.{name}, signal.SIG_IGN)\n" for name in ignored)
            + "print('handlers' + ' set', flush=True)\ntime.sleep(60)\n")
    with ChildProcesses(tmp_path, loopback_env(1)) as children:
        with sigint_disposition(parent):
            child = children.start("stubborn", [sys.executable, "-c", code])
        wait_for(lambda: "handlers set" in child.output(), 30.0, "the child to install its handlers", child.check_alive)
        assert child.stop(timeout=0.5, grace=0.5) == status
    assert "stubborn" in str(child.log_path)


def test_ctrl_c_while_a_child_starts_still_stops_that_child(tmp_path, monkeypatch):
    """Ctrl-C arriving while Popen is still returning (the child already runs: a supervisor that
    sends SIGINT once it sees the child, or a user's timing) must not leave that child unknown to
    ChildProcesses, and so never stopped."""
    real_popen = children_module.subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        signal.raise_signal(signal.SIGINT)  # the Python handler runs before Popen's caller goes on
        return proc

    started = []
    monkeypatch.setattr(children_module.subprocess, "Popen", popen_then_ctrl_c)
    with sigint_disposition(signal.default_int_handler):
        with pytest.raises(KeyboardInterrupt):
            with ChildProcesses(tmp_path, loopback_env(1)) as children:
                children.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
                time.sleep(5)  # never reached: the Ctrl-C is raised by start()
    assert len(started) == 1
    try:
        assert started[0].wait(5) is not None  # stopped on the way out of the with block
    finally:
        started[0].kill()
        started[0].wait()


def test_sigint_default_raises_keyboard_interrupt_where_sigint_was_ignored():
    with sigint_disposition(signal.SIG_IGN):
        with pytest.raises(KeyboardInterrupt):
            with sigint_default():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler runs at the next bytecode: never reached
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the caller's disposition is back
    with sigint_disposition(signal.default_int_handler):  # a SIGINT that is not ignored is left alone
        with sigint_default():
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_loopback_env_is_private_and_loopback_only():
    env = loopback_env(42, {"EXTRA": "1"}, base={"PATH": "/bin", "ROS_DOMAIN_ID": "0"})
    assert env["ROS_DOMAIN_ID"] == "42" and env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_loopback.xml")
    assert env["PYTHONUNBUFFERED"] == "1" and env["EXTRA"] == "1" and env["PATH"] == "/bin"
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in env
