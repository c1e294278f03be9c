"""Command-line tools (ROS-free) for offline training and evaluation."""
