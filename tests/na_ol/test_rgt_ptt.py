"""RGT and PTT on the quadratic problem: exact truncated / selected derivatives."""

import numpy as np
import pytest

from jboat import ConfigError, MissingConfigKeyError
from jboat.plan import Trajectory
from quadratic import Quadratic, rel_err


@pytest.mark.parametrize("T", [1, 3])
def test_rgt_is_the_jacobian_of_the_last_steps(T):
    q = Quadratic()
    K = 5
    problem = q.build(["NGD"], ["RGT", "RAD"], lower_iters=K, return_grad=True,
                      RGT={"truncate_iter": T})
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    # y_K is the full K-step iterate (truncated steps evaluate step t at y_t)
    expected = q.unrolled_hypergradient(q.x0, q.y0, K, start=T)
    assert rel_err(grads[0].numpy(), expected) < 1e-4
    assert rel_err(grads[0].numpy(), q.unrolled_hypergradient(q.x0, q.y0, K)) > 1e-2


def test_rgt_warm_start_copies_the_full_iterate():
    q = Quadratic()
    problem = q.build(["NGD"], ["RGT", "RAD"], lower_iters=4, return_grad=True,
                      RGT={"truncate_iter": 2})
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert rel_err(q.lower.value.numpy(), q.trajectory(q.x0, q.y0, 4)[-1]) < 1e-5


@pytest.mark.parametrize("rgt, error", [
    ({}, MissingConfigKeyError),
    ({"truncate_iter": 0}, ConfigError),
    ({"truncate_iter": 5}, ConfigError),
    ({"truncate_iter": 1.5}, TypeError),
])
def test_rgt_truncate_iter_is_checked(rgt, error):
    q = Quadratic()
    with pytest.raises(error, match="truncate_iter"):
        q.build(["NGD"], ["RGT", "RAD"], lower_iters=5, RGT=rgt)


def _interior_peak_problem(q):
    """y0 and t such that F(x, y_t), t = 1..K, peaks strictly inside the trajectory.

    With t = C y* (y* = A⁻¹Bx) and y0 = y* + d, Cd = 0: F(x, y_0) = F(x, y*) = ½μ‖x‖²,
    and ‖C Mᵗ d‖ first grows, then decays.
    """
    y_star = np.linalg.solve(q.A, q.B @ q.x0)
    _, _, vt = np.linalg.svd(q.C)
    y0 = y_star + 2.0 * (vt[2] + vt[3])
    q.t = q.C @ y_star
    return y0


def test_ptt_selects_the_interior_maximum_and_differentiates_up_to_it():
    q = Quadratic()
    K = 6
    y0 = _interior_peak_problem(q)
    ys = q.trajectory(q.x0, y0, K)
    values = [q.F(q.x0, y) for y in ys[1:]]
    k_star = 1 + int(np.argmax(values))
    assert 1 < k_star < K  # the peak is strictly inside
    problem = q.build(["NGD"], ["PTT", "RAD"], lower_iters=K, return_grad=True, y0=y0)
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert problem._log_results[0] == {"dynamic_results_0": k_star}
    expected = q.unrolled_hypergradient(q.x0, y0, K, select=k_star)
    assert rel_err(grads[0].numpy(), expected) < 1e-4
    assert rel_err(grads[0].numpy(), q.unrolled_hypergradient(q.x0, y0, K)) > 1e-2


def test_ptt_with_rgt_truncates_before_the_selected_step():
    q = Quadratic()
    K, T = 6, 1
    y0 = _interior_peak_problem(q)
    ys = q.trajectory(q.x0, y0, K)
    k_star = 1 + int(np.argmax([q.F(q.x0, y) for y in ys[T + 1:]]))  # index after y_T
    problem = q.build(["NGD"], ["PTT", "RGT", "RAD"], lower_iters=K, return_grad=True,
                      y0=y0, RGT={"truncate_iter": T})
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert problem._log_results[0] == {"dynamic_results_0": k_star}
    expected = q.unrolled_hypergradient(q.x0, y0, T + k_star, start=T)
    assert rel_err(grads[0].numpy(), expected) < 1e-4


def test_pre_operators_only_configure_the_plan():
    q = Quadratic()
    problem = q.build(["NGD"], ["PTT", "RGT", "RAD"], lower_iters=3, RGT={"truncate_iter": 1})
    plan = problem._plan
    assert plan.select_worst and plan.truncate == 1 and plan.record
    assert not plan.first_order and not plan.learn_init and not plan.objective.aggregated
    plain = q.build(["NGD"], ["RAD"], lower_iters=3)._plan
    assert not plain.select_worst and plain.truncate == 0


def test_evaluation_step_counts_truncated_steps():
    assert Trajectory(None, 7).evaluation_step == 7
    assert Trajectory(None, 7).record == -1
    assert Trajectory(None, 7, selected=3).evaluation_step == 3
    assert Trajectory(None, 7, truncated=2, selected=3).evaluation_step == 5
