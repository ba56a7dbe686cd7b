"""Synthetic driving scenes, rosbag writing and tiny-model training."""
