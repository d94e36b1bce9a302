"""Offline profiling: record a running graph to MCAP, turn a recording into an HTML report.

`recorder` writes the raw CDR of every topic as received (ROS 2 MCAP profile, so Foxglove,
`ros2 bag`, rosbags and mcap-ros2-support read it); `report` reads a recording back, truncated or
not, and computes per-stage latencies from stamps and `/diagnostics` traces only.
"""
