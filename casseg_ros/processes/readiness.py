"""Readiness read from the ROS graph: matched endpoints, endpoints of a named node, lifecycle state.

Never from sleeps or log lines. Each wait polls one condition until it holds, calls `alive`
in between (e.g. `ChildProcesses.check_alive`, which raises when the process that should become
ready has exited), and raises `ReadinessTimeout` naming what never happened.

- In the process that owns an endpoint: `wait_for_matched_subscriptions(publisher)` (a reader is
  matched to our writer: a sample published now reaches it) and `wait_for_matched_publishers`.
- In a parent process: `GraphWatcher`, an rclpy node in its own context and executor thread that
  sees the graph of the children's domain: endpoints of a named node on a topic
  (`get_publishers_info_by_topic` / `get_subscriptions_info_by_topic`), a lifecycle node's
  state (its `~/get_state` service), and which header stamps arrived on a topic (`StampLog`).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Mapping

import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

POLL_S = 0.05
Alive = Callable[[], None]


class ReadinessTimeout(TimeoutError):
    """A readiness condition did not hold in time."""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, alive: Alive | None = None,
             poll_s: float = POLL_S) -> Any:
    """Poll `condition` until it returns something truthy (returned); `alive()` between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() >= deadline:
            raise ReadinessTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll_s)


def wait_for_matched_subscriptions(publisher: Any, timeout: float, count: int = 1,
                                   alive: Alive | None = None) -> int:
    """Until `count` readers are matched to `publisher` (the writer side of the match)."""
    return wait_for(lambda: publisher.get_subscription_count() >= count and publisher.get_subscription_count(),
                    timeout, f"{count} matched subscription(s) on {publisher.topic_name}", alive)


def wait_for_matched_publishers(subscription: Any, timeout: float, count: int = 1,
                                alive: Alive | None = None) -> int:
    """Until `count` writers are matched to `subscription` (the reader side of the match)."""
    return wait_for(lambda: subscription.get_publisher_count() >= count and subscription.get_publisher_count(),
                    timeout, f"{count} matched publisher(s) on {subscription.topic_name}", alive)


def _fqn(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


class StampLog:
    """Header stamps (ns) of the messages that arrived on `topic` (any message type with a
    std_msgs/Header `header`). Reliable, so nothing is lost between a matched publisher and us."""

    def __init__(self, node: Node, topic: str, msg_type: Any, depth: int = 50):
        self.topic = topic
        self._seen: set[int] = set()
        self._count = 0
        self._changed = threading.Condition()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self._node = node
        self.subscription = node.create_subscription(msg_type, topic, self._on_message, qos)

    def close(self) -> None:
        self._node.destroy_subscription(self.subscription)

    def _on_message(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._changed:
            self._seen.add(stamp)
            self._count += 1
            self._changed.notify_all()

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def seen(self, stamp_ns: int) -> bool:
        with self._changed:
            return stamp_ns in self._seen

    def wait_for_stamp(self, stamp_ns: int, timeout: float) -> bool:
        """True once a message stamped `stamp_ns` has arrived; False after `timeout` s."""
        with self._changed:
            return self._changed.wait_for(lambda: stamp_ns in self._seen, timeout)


class GraphWatcher:
    """The parent's view of the ROS graph of a domain (an rclpy node spun on its own thread).

    Joins the domain with the children's DDS settings: `env`'s Fast DDS profile and rmw are set in
    this process's environment before its participant is created (Fast DDS reads them then)."""

    def __init__(self, domain_id: int, env: Mapping[str, str] | None = None, name: str = "casseg_graph_watcher"):
        for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
            if env and key in env:
                os.environ[key] = env[key]
        # Its own context: independent of any rclpy.init of the caller, and no signal handlers
        # (a Ctrl-C stays a KeyboardInterrupt of the parent, which then stops its children).
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"{name}_{os.getpid()}", context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, name="graph_watcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ endpoints
    def publishers(self, topic: str) -> list[str]:
        """Fully qualified names of the nodes that publish `topic`."""
        return [_fqn(i.node_namespace, i.node_name) for i in self.node.get_publishers_info_by_topic(topic)]

    def subscribers(self, topic: str) -> list[str]:
        """Fully qualified names of the nodes that subscribe to `topic`."""
        return [_fqn(i.node_namespace, i.node_name) for i in self.node.get_subscriptions_info_by_topic(topic)]

    def wait_for_subscriber(self, topic: str, timeout: float, node: str | None = None,
                            alive: Alive | None = None) -> list[str]:
        """Until `node` (a fully qualified name; any node if None) subscribes to `topic`. Naming the
        node matters: an earlier subscriber that just stopped can linger in the graph."""
        return wait_for(lambda: [n for n in self.subscribers(topic) if node is None or n == node], timeout,
                        f"{node or 'a subscriber'} on {topic}", alive)

    def wait_for_publisher(self, topic: str, timeout: float, node: str | None = None,
                           alive: Alive | None = None) -> list[str]:
        """Until `node` (a fully qualified name; any node if None) publishes `topic`."""
        return wait_for(lambda: [n for n in self.publishers(topic) if node is None or n == node], timeout,
                        f"{node or 'a publisher'} on {topic}", alive)

    # ------------------------------------------------------------------ lifecycle
    def lifecycle_state(self, node: str, timeout: float = 10.0) -> str:
        """The lifecycle node `node`'s current state label ('unconfigured', 'inactive', 'active', ...)."""
        client = self.node.create_client(GetState, f"{node.rstrip('/')}/get_state")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise ReadinessTimeout(f"service {node.rstrip('/')}/get_state not available after {timeout:g} s")
            future = client.call_async(GetState.Request())
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise ReadinessTimeout(f"{node.rstrip('/')}/get_state did not answer in {timeout:g} s")
            return future.result().current_state.label
        finally:
            self.node.destroy_client(client)

    def wait_for_lifecycle_state(self, node: str, state: str, timeout: float, alive: Alive | None = None) -> str:
        """Until `node` reports `state` on `~/get_state` (e.g. 'active': configured, publishers
        and the camera subscription created)."""
        deadline = time.monotonic() + timeout

        def reached() -> bool:
            left = max(deadline - time.monotonic(), 0.1)
            try:
                return self.lifecycle_state(node, timeout=min(left, 2.0)) == state
            except ReadinessTimeout:
                return False

        wait_for(reached, timeout, f"{node} to be {state}", alive)
        return state

    # ------------------------------------------------------------------ outputs
    def stamp_log(self, topic: str, msg_type: Any) -> StampLog:
        """Start recording the header stamps that arrive on `topic` (before they can arrive)."""
        return StampLog(self.node, topic, msg_type)

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)  # spin has returned before the node and context go away
        self.node.destroy_node()
        self.context.try_shutdown()

    def __enter__(self) -> "GraphWatcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
