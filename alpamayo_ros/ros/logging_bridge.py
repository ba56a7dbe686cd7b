"""Route the ROS-free packages' `logging` records to the rclpy logger, so the core's warnings reach /rosout."""

from __future__ import annotations

import logging

from rclpy.logging import get_logger


class _RclpyHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        logger = get_logger(record.name)
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            logger.error(message)
        elif record.levelno >= logging.WARNING:
            logger.warning(message)
        elif record.levelno >= logging.INFO:
            logger.info(message)
        else:
            logger.debug(message)


def forward_python_logging(level: int = logging.INFO) -> None:
    """Attach the rclpy handler to the `alpamayo_ros` logger tree (idempotent)."""
    root = logging.getLogger("alpamayo_ros")
    if not any(isinstance(h, _RclpyHandler) for h in root.handlers):
        root.addHandler(_RclpyHandler())
    root.setLevel(level)
    root.propagate = False
