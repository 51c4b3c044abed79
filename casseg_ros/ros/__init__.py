"""ROS 2 layer of casseg_ros: the output-topic table, the frame step at the message level (shared
with replay and the benchmarks), message conversions and builders, and the lifecycle node.

Everything here is thin glue over the ROS-free library (model, runtime, perception, pipeline).
"""
