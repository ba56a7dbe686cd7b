"""alpamayo_ros: NVIDIA Alpamayo-R1 as a ROS 2 planner.

Subpackages: `model` (the network, ROS-free), `planner` (the planning core, ROS-free), `ros` (rclpy adapters),
`sim` (synthetic scenes, bags, tiny-model training). `alpamayo_ros.msg` is generated from msg/*.msg by rosidl.
"""

from pkgutil import extend_path

# In a source checkout the generated `alpamayo_ros.msg` lives in the installed copy of this package
# (site-packages or a colcon install space); let the source tree and that copy form one package.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
