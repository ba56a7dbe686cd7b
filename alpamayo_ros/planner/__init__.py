"""Planning core, ROS-free: frame buffers, timestamp sync, egomotion, trajectory selection, engine wrapper."""
