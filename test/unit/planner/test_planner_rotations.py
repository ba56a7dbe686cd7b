"""Quaternion helpers (x, y, z, w) against transforms3d (which is w-first)."""

from __future__ import annotations

import numpy as np
import pytest
import transforms3d.quaternions as t3d

from alpamayo_ros.planner.rotations import quat_multiply, quat_normalize, quat_slerp, quat_to_matrix


def _xyzw(q_wxyz: np.ndarray) -> np.ndarray:
    return np.array([q_wxyz[1], q_wxyz[2], q_wxyz[3], q_wxyz[0]])


def _random_quats(count: int, seed: int) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(count, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)  # [N, 4] xyzw


def test_matrix_matches_transforms3d() -> None:
    for q in _random_quats(20, 0):
        q_wxyz = np.array([q[3], q[0], q[1], q[2]])
        np.testing.assert_allclose(quat_to_matrix(q), t3d.quat2mat(q_wxyz), atol=1e-12)


def test_product_matches_transforms3d_and_matrices() -> None:
    a, b = _random_quats(2, 1)
    to_wxyz = [3, 0, 1, 2]
    np.testing.assert_allclose(quat_multiply(a, b), _xyzw(t3d.qmult(a[to_wxyz], b[to_wxyz])), atol=1e-12)
    product = quat_to_matrix(quat_multiply(a, b))
    np.testing.assert_allclose(product, quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)


@pytest.mark.parametrize("u", [0.0, 0.25, 0.5, 0.9, 1.0, 1.3, -0.2])
def test_slerp_matches_transforms3d_power(u: float) -> None:
    to_wxyz = [3, 0, 1, 2]
    for q0, q1 in zip(_random_quats(10, 2), _random_quats(10, 3)):
        if np.dot(q0, q1) < 0:  # transforms3d's qpow does not pick the short arc; compare on the short arc
            q1 = -q1
        rel = t3d.qmult(t3d.qinverse(q0[to_wxyz]), q1[to_wxyz])
        expected = _xyzw(t3d.qmult(q0[to_wxyz], t3d.qpow(rel, u)))
        np.testing.assert_allclose(quat_slerp(q0, q1, u), expected, atol=1e-10)


def test_slerp_takes_the_short_arc_and_hits_endpoints() -> None:
    q0 = np.array([0.0, 0.0, np.sin(0.1), np.cos(0.1)])  # yaw 0.2
    q1 = -np.array([0.0, 0.0, np.sin(0.3), np.cos(0.3)])  # yaw 0.6, sign-flipped
    mid = quat_to_matrix(quat_slerp(q0, q1, 0.5))
    assert np.arctan2(mid[1, 0], mid[0, 0]) == pytest.approx(0.4, abs=1e-12)
    np.testing.assert_allclose(quat_slerp(q0, q1, 0.0), q0, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quat_slerp(q0, q1, 1.0)), quat_to_matrix(q1), atol=1e-12)
    np.testing.assert_array_equal(quat_slerp(q0, q0, 0.7), q0)


def test_zero_quaternion_cannot_be_normalised() -> None:
    with pytest.raises(ValueError, match="cannot normalise"):
        quat_normalize(np.zeros(4))


def test_matrix_to_quat_inverts_quat_to_matrix_for_random_rotations():
    from alpamayo_ros.planner.rotations import matrix_to_quat, quat_to_matrix

    rng = np.random.default_rng(3)
    quats = rng.normal(size=(200, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    quats[quats[:, 3] < 0] *= -1
    quats[:4] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]  # 180 deg turns: pivots x, y, z
    mats = np.stack([quat_to_matrix(q) for q in quats])
    back = matrix_to_quat(mats)
    assert back.shape == (200, 4)
    np.testing.assert_allclose(np.abs(np.sum(back * quats, axis=1)), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.stack([quat_to_matrix(q) for q in back]), mats, atol=1e-12)
