"""CG, NS, IGA and FD on the quadratic problem against their closed forms.

LL f = ½yᵀAy - yᵀBx, UL F = ½‖Cy - t‖² + ½μ‖x‖², SGD lr s; at y_K:
b = ∇_yF = Cᵀ(Cy_K - t), ∇²_yy f = A, ∇²_xy f = -Bᵀ, ∇_x f = -Bᵀy.
"""

import logging

import numpy as np
import pytest

from jboat import ConfigError
from na_problems import gda_hessian, gda_trajectory
from quadratic import Quadratic, rel_err

K = 4


def _run(q, na_op, gm_op=("NGD",), **options):
    options.setdefault("lower_iters", K)
    problem = q.build(list(gm_op), list(na_op), return_grad=True, **options)
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    return grads[0].numpy()


def test_cg_with_enough_iterations_is_the_implicit_hypergradient_at_y_K():
    q = Quadratic()
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    grad = _run(q, ["CG"], CG={"k": 10, "tolerance": 1e-12})
    assert rel_err(grad, q.implicit_hypergradient(q.x0, y_K)) < 1e-4


def test_cg_with_one_iteration_is_one_steepest_descent_step():
    q = Quadratic()
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    b = q.dF_dy(y_K)
    v = (b @ b) / (b @ (q.lr * q.A @ b)) * b           # v_1 of CG on (sA) v = b
    expected = q.mu * q.x0 + q.lr * q.B.T @ v
    grad = _run(q, ["CG"], CG={"k": 1})
    assert rel_err(grad, expected) < 1e-4
    assert rel_err(grad, q.implicit_hypergradient(q.x0, y_K)) > 1e-3


@pytest.mark.parametrize("k", [1, 3])
def test_ns_is_the_truncated_neumann_sum(k):
    q = Quadratic()
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    M = q.M()
    series = sum(np.linalg.matrix_power(M, i) for i in range(k + 1))
    expected = q.mu * q.x0 + q.lr * q.B.T @ series @ q.dF_dy(y_K)
    grad = _run(q, ["NS"], CG={"k": k, "tolerance": 0.0})
    assert rel_err(grad, expected) < 1e-4


def test_cg_with_gda_uses_the_weight_of_the_last_step():
    q = Quadratic()
    a0, decay = 0.5, 0.8
    ys, _ = gda_trajectory(q, q.x0, q.y0, K, a0, decay)
    alpha = a0 * decay ** K                                # α_K: K steps were taken
    H = gda_hessian(q, alpha)
    expected = q.mu * q.x0 + (1 - alpha) * q.B.T @ np.linalg.solve(H, q.dF_dy(ys[-1]))
    grad = _run(q, ["CG"], gm_op=["GDA", "NGD"], GDA={"alpha_init": a0, "alpha_decay": decay})
    assert rel_err(grad, expected) < 1e-4


def test_cg_under_ptt_differentiates_through_the_selected_prefix():
    # upstream semantics kept (docs/operators.md): with PTT the trajectory is
    # recorded, so c = ∇_x F and VJP(Φ, x, v) are total derivatives through y_{k*}(x)
    q = Quadratic()
    a0, decay = 0.5, 0.8
    ys, Js = gda_trajectory(q, q.x0, q.y0, K, a0, decay)
    k_star = 1 + int(np.argmax([q.F(q.x0, y) for y in ys[1:]]))
    alpha = a0 * decay ** k_star
    H, J, b = gda_hessian(q, alpha), Js[k_star], q.dF_dy(ys[k_star])
    v = np.linalg.solve(q.lr * H, b)
    # d/dx <y_sel - s∇_y h(x, y_sel), v> = Jᵀv - s Jᵀ H v + s(1 - α) Bᵀ v
    expected = (q.mu * q.x0 + J.T @ b + J.T @ v - q.lr * J.T @ H @ v
                + q.lr * (1 - alpha) * q.B.T @ v)
    grad = _run(q, ["PTT", "CG"], gm_op=["GDA", "NGD"],
                GDA={"alpha_init": a0, "alpha_decay": decay}, CG={"k": 10})
    assert rel_err(grad, expected) < 1e-4


def test_iga_closed_form():
    q = Quadratic()
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    a = q.dF_dy(y_K)
    b = q.A @ y_K - q.B @ q.x0
    lam = (a @ b) / (b @ b)
    expected = q.mu * q.x0 - lam * (-q.B.T @ y_K)
    assert rel_err(_run(q, ["IGA"]), expected) < 1e-4


def test_fd_is_the_one_step_unrolled_darts_gradient():
    q = Quadratic()
    # K = 1: DARTS' formula is the derivative of F(x, y_0 - s∇_y f(x, y_0))
    assert rel_err(_run(q, ["FD"], lower_iters=1), q.unrolled_hypergradient(q.x0, q.y0, 1)) < 1e-4


def test_fd_closed_form_after_several_steps_and_with_gda():
    q = Quadratic()
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    # the mixed derivative ∇²_xy f = -Bᵀ is constant, so the difference is exact
    expected = q.mu * q.x0 + q.lr * q.B.T @ q.dF_dy(y_K)
    assert rel_err(_run(q, ["FD"], FD={"r": 0.05}), expected) < 1e-4
    a0 = 0.3
    ys, _ = gda_trajectory(q, q.x0, q.y0, K, a0, 0.9)
    expected = q.mu * q.x0 + q.lr * (1 - a0) * q.B.T @ q.dF_dy(ys[-1])  # α = alpha_init
    grad = _run(q, ["FD"], gm_op=["GDA", "NGD"], GDA={"alpha_init": a0, "alpha_decay": 0.9})
    assert rel_err(grad, expected) < 1e-4


def test_fd_skips_the_correction_when_grad_y_F_vanishes():
    q = Quadratic()
    q.t = q.C @ q.trajectory(q.x0, q.y0, K)[-1]            # ∇_y F(x, y_K) = 0
    grad = _run(q, ["FD"])
    assert np.all(np.isfinite(grad))
    assert rel_err(grad, q.mu * q.x0) < 1e-4


def test_fd_leaves_the_real_lower_weights_untouched():
    q = Quadratic()
    before = q.y0.astype(np.float32)
    _run(q, ["FD"], copy_last_param=False)
    np.testing.assert_array_equal(q.lower.value.numpy(), before)


def test_fd_refuses_rgt():
    with pytest.raises(ConfigError, match="FD and RGT"):
        Quadratic().build(["NGD"], ["FD", "RGT"], lower_iters=3, RGT={"truncate_iter": 1})


@pytest.mark.parametrize("na_op", [["CG"], ["NS"], ["IGA"], ["FD"]])
def test_dynamic_initialization_gets_grad_y_F(na_op):
    # without a recorded trajectory time 0 is the latest iterate, so the DI gradient
    # is ∇_y F(x, y_K) and the DI step (SGD, lr DI.lr) moves the LL weights by it
    q = Quadratic()
    lr = 0.5
    _run(q, na_op, gm_op=["DI", "NGD"], copy_last_param=False, DI={"lr": lr})
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    expected = q.y0 - lr * q.dF_dy(y_K)
    assert rel_err(q.lower.value.numpy(), expected) < 1e-5


@pytest.mark.parametrize("na_op, warned", [
    (["FOA", "CG"], True), (["RGT", "IGA"], True), (["FOA", "RAD"], False),
    (["RGT", "PTT", "NS"], False)])
def test_pre_operators_without_effect_warn_once(caplog, na_op, warned):
    with caplog.at_level(logging.WARNING, logger="jboat"):
        Quadratic().build(["NGD"], na_op, lower_iters=3, RGT={"truncate_iter": 1})
    messages = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert len(messages) == (1 if warned else 0)


def test_dynamic_initialization_under_ptt_differentiates_to_y0():
    # with PTT the trajectory is recorded: the DI gradient is ∂F(x, y_{k*})/∂y_0
    # = (M^{k*})ᵀ Cᵀ(C y_{k*} - t)
    q = Quadratic()
    lr = 0.5
    ys = q.trajectory(q.x0, q.y0, K)
    k_star = 1 + int(np.argmax([q.F(q.x0, y) for y in ys[1:]]))
    _run(q, ["PTT", "CG"], gm_op=["DI", "NGD"], copy_last_param=False, DI={"lr": lr})
    grad = np.linalg.matrix_power(q.M(), k_star).T @ q.dF_dy(ys[k_star])
    assert rel_err(q.lower.value.numpy(), q.y0 - lr * grad) < 1e-5


@pytest.mark.parametrize("na_op, tracked", [
    (["CG"], False), (["NS"], False), (["FD"], False), (["IGA"], False),
    (["RGT", "CG"], False), (["FOA", "NS"], False),
    (["RAD"], True), (["PTT", "IGA"], True)])
def test_only_trajectory_operators_record_the_trajectory(na_op, tracked):
    # CG/NS/FD/IGA keep O(|y|) memory: the inner loop keeps only the latest weights
    q = Quadratic()
    problem = q.build(["NGD"], na_op, lower_iters=3, RGT={"truncate_iter": 1})
    assert problem._track_opt_traj is tracked
