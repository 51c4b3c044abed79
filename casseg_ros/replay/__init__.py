"""rosbag2 replay evaluation of the casseg_ros pipeline (offline and against the live node).

`casseg-replay` (cli.py) is the entry point; `offline.run_replay` runs the node's per-frame pipeline
(`casseg_ros.pipeline.FramePipeline`) over a recording; `live` publishes a recording to a running node and
records what it answers. Bags are read and written with `rosbags` (mcap and sqlite3).
"""
