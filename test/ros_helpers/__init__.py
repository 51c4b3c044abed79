"""Helpers for the multi-process ROS tests (camera process, output probe)."""
