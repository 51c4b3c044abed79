"""rosbag2 replay evaluation of the casseg_ros node's frame step (offline and against the live node).

`casseg-replay` (cli.py) is the entry point, with one room per mode: `offline` runs the node's
frame step (`casseg_ros.ros.frame_io` around `casseg_ros.pipeline.FramePipeline`) over a recording
in this process; `live` publishes a recording to a running node and records what it answers;
`fleet` runs the offline replay of many bags on Dask. Shared by the three: `bag` (rosbag2 reading
and writing with `rosbags`, mcap and sqlite3), `metrics` and `report`.
"""
