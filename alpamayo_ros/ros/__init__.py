"""rclpy adapters: message conversion, the planner node, replay tools. The only place that imports rclpy."""
