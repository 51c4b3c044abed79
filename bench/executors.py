"""A 500 Hz burst of 128x256 rgb8 images into a subscriber spun by SingleThreadedExecutor or EventsExecutor.

    python bench/executors.py single|events [FRAMES=1000] [RELIABLE=0]   (MAIN_SPIN=1: spin_once in the
    main thread, as node_main does; else spin() in a background thread)

Prints the frames received and the subscriber process's CPU time. The publisher is a child process;
both use the environment's Fast DDS profile (set FASTDDS_DEFAULT_PROFILES_FILE to
config/fastdds_loopback.xml) and a random ROS_DOMAIN_ID unless one is set. docs/ros_node.md, Threads.
"""
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

def publisher(n, rate, reliable):
    rclpy.init()
    node = rclpy.create_node("burst_pub")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, "burst", qos)
    while pub.get_subscription_count() == 0: time.sleep(0.05)
    time.sleep(1.0)
    msg = Image(height=128, width=256, encoding="rgb8", step=768, data=np.zeros(128*768, np.uint8).tobytes())
    t = time.monotonic()
    for i in range(n):
        msg.header.frame_id = str(i); pub.publish(msg)
        t += 1.0 / rate; d = t - time.monotonic()
        if d > 0: time.sleep(d)
    time.sleep(1.0)
    print("sent", n, flush=True)

def subscriber(kind, n, reliable):
    rclpy.init()
    node = rclpy.create_node("burst_sub")
    got = []
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(Image, "burst", lambda m: got.append(time.monotonic()), qos)
    ex = EventsExecutor() if kind == "events" else SingleThreadedExecutor()
    ex.add_node(node)
    cpu0 = time.process_time()
    pub = subprocess.Popen([sys.executable, __file__, "pub", str(n), "500", str(int(reliable))])
    if os.environ.get("MAIN_SPIN"):
        while pub.poll() is None:
            ex.spin_once(timeout_sec=0.1)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.1)
    else:
        th = threading.Thread(target=ex.spin, daemon=True); th.start()
        pub.wait(120)
        time.sleep(0.5)
    print(f"{kind:6s} reliable={reliable}: received {len(got)} of {n}, process CPU {time.process_time() - cpu0:.2f} s", flush=True)
    os._exit(0)

if sys.argv[1] == "pub":
    publisher(int(sys.argv[2]), float(sys.argv[3]), bool(int(sys.argv[4])))
else:
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    subscriber(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000,
               bool(int(sys.argv[3])) if len(sys.argv) > 3 else False)
