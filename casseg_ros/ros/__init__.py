"""ROS 2 layer of casseg_ros: message conversions and the lifecycle segmentation node.

Everything here is thin glue over the ROS-free library (model, runtime, perception).
"""
