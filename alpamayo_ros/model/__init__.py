"""Alpamayo-R1 network, ROS-free: config, tokens, prompt, expert, flow matching, action space, loading."""
