"""Camera sources behind a registry (RealSense, OpenCV/V4L2, ROS topics, replay, simulation)."""
