"""Launch the Alpamayo planner: `ros2 launch alpamayo_ros planner.launch.py [arg:=value ...]`.

Arguments: config (params YAML), backend (tiny | checkpoint), model_path, tokenizer_path, device, use_sim_time,
rviz, namespace, and the input topics the node's `~/input/...` names are remapped to.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

CAMERAS = (
    "camera_cross_left_120fov",
    "camera_front_wide_120fov",
    "camera_cross_right_120fov",
    "camera_front_tele_30fov",
)


def _planner(context):
    cfg = {name: LaunchConfiguration(name).perform(context) for name in (
        "camera_topic_prefix", "odometry_topic", "image_transport", "namespace")}
    remaps = [("~/input/odometry", cfg["odometry_topic"])]
    for cam in CAMERAS:
        base = f"{cfg['camera_topic_prefix']}/{cam}"
        remaps += [
            (f"~/input/camera/{cam}/image", f"{base}/image_raw"),
            (f"~/input/camera/{cam}/image/compressed", f"{base}/image_raw/compressed"),
            (f"~/input/camera/{cam}/camera_info", f"{base}/camera_info"),
        ]
    overrides = {
        "use_sim_time": LaunchConfiguration("use_sim_time"),
        "model.backend": LaunchConfiguration("backend"),
        "model.path": LaunchConfiguration("model_path"),
        "model.tokenizer_path": LaunchConfiguration("tokenizer_path"),
        "model.device": LaunchConfiguration("device"),
        "input.image_transport": cfg["image_transport"],
    }
    return [
        Node(
            package="alpamayo_ros",
            executable="planner_node",
            name="alpamayo_planner",
            namespace=cfg["namespace"],
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("config"), overrides],
            remappings=remaps,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("alpamayo_ros")
    args = [
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution([share, "config", "planner.yaml"]),
                              description="Parameter file for the planner node"),
        DeclareLaunchArgument("backend", default_value="tiny",
                              description="tiny (embedded small model, CPU) or checkpoint (model_path)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Alpamayo checkpoint directory (config.json + safetensors)"),
        DeclareLaunchArgument("tokenizer_path", default_value="",
                              description="Local Qwen3-VL tokenizer/processor directory (checkpoint backend)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu or cuda[:N]"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz with rviz/alpamayo.rviz"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the planner node"),
        DeclareLaunchArgument("camera_topic_prefix", default_value="/sensors/camera",
                              description="Camera topics are <prefix>/<camera>/image_raw[/compressed]"),
        DeclareLaunchArgument("odometry_topic", default_value="/localization/odometry",
                              description="nav_msgs/Odometry input"),
        DeclareLaunchArgument("image_transport", default_value="compressed", description="raw or compressed"),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "rviz", "alpamayo.rviz"])],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*args, OpaqueFunction(function=_planner), rviz])
