"""One call of each FO operator against its update equations (docs/operators.md),
written out in float64 in fo_reference.py, on the quadratic problem."""

import jittor as jt
import numpy as np
import pytest

from fo_reference import (QuadraticMaths, alto_step, build, feeds, gaffo_step, meso_step,
                          pgdo_step, square_quadratic, vfo_step, vso_step)
from quadratic import Quadratic, adam_first_step

RTOL, ATOL = 1e-4, 1e-5


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, float), expected, rtol=RTOL, atol=ATOL)


def step(problem, q, offset, k, **feed_kwargs):
    """One run_iter with return_grad: (x-gradient, y after, upper_loss record)."""
    ll, ul = feeds(q, offset, **feed_kwargs)
    grads, _ = problem.run_iter(ll, ul, k)
    return grads[0].numpy(), q.lower.value.numpy(), problem._log_results[-1]["upper_loss"]


def test_vso_step_with_decayed_coefficients_and_active_barrier():
    q = Quadratic()
    opts = dict(z_loop=3, z_lr=0.05, ll_l2_reg=0.2, ul_l2_reg=0.1, ul_ln_reg=2.0, reg_decay=0.5)
    K, k, offset = 4, 3, 5.0
    problem = build(q, "VSO", lower_iters=K, return_grad=True, VSO=opts)
    gx, y, loss = step(problem, q, offset, k)
    m = QuadraticMaths(q, offset)
    z_ref, gx_ref, loss_ref = vso_step(m, q.x0, q.y0, k, K, q.lr, opts)
    close(y, z_ref)                      # the real LL model keeps z
    close(gx, gx_ref)
    close(loss, loss_ref)
    # the barrier is not inert: without it the x-gradient differs clearly
    _, gx_plain, _ = vso_step(m, q.x0, q.y0, k, K, q.lr, dict(opts, ul_ln_reg=0.0))
    assert np.linalg.norm(gx_ref - gx_plain) > 1e-2 * np.linalg.norm(gx_ref)


def test_vso_reg_decay_true_means_one():
    q = Quadratic()
    opts = dict(z_loop=1, z_lr=0.05, ll_l2_reg=0.2, ul_l2_reg=0.1, ul_ln_reg=2.0)
    problem = build(q, "VSO", lower_iters=2, return_grad=True, VSO=dict(opts, reg_decay=True))
    assert problem.boat_configs["VSO"]["reg_decay"] == 1.0
    gx, _, _ = step(problem, q, 5.0, 2)
    _, gx_ref, _ = vso_step(QuadraticMaths(q, 5.0), q.x0, q.y0, 2, 2, q.lr,
                            dict(opts, reg_decay=1.0))
    close(gx, gx_ref)


@pytest.mark.parametrize("displaced", [False, True])
def test_vfo_step_descends_along_bome_direction(displaced):
    q = Quadratic()
    m = QuadraticMaths(q)
    y0 = q.y0
    if displaced:   # y*(x0) moved against ∇_yF: <∇F, ∇q> < 0, so the multiplier is active
        y_star = np.linalg.solve(q.A, q.B @ q.x0)
        y0 = y_star - 0.3 * np.linalg.solve(q.A, m.Fy(q.x0, y_star))
    opts = dict(y_hat_lr=0.2, u1=1.0)
    K = 4
    problem = build(q, "VFO", lower_iters=K, return_grad=True, VFO=opts, y0=y0)
    gx, y, loss = step(problem, q, 0.0, 0)
    y_ref, gx_ref, loss_ref, lam = vfo_step(m, q.x0, y0, K, q.lr, opts)
    assert (lam > 1.0) if displaced else (lam == 0.0)
    close(y, y_ref)
    close(gx, gx_ref)
    close(loss, loss_ref)


def test_vfo_lower_step_uses_the_lower_optimizers_own_rule():
    q = Quadratic()
    lr, betas, eps = 0.05, (0.9, 0.999), 1e-8
    K = 3
    problem = build(q, "VFO", lower_iters=K, return_grad=True, VFO=dict(y_hat_lr=0.2),
                    ll_opt=lambda ps: jt.optim.Adam(ps, lr=lr, betas=betas, eps=eps))
    _, y, _ = step(problem, q, 0.0, 0)
    m = QuadraticMaths(q)
    y_sgd, _, _, _ = vfo_step(m, q.x0, q.y0, K, 1.0, dict(y_hat_lr=0.2, u1=1.0))
    d_y = q.y0 - y_sgd                   # the direction d_y (step 1.0)
    close(y, adam_first_step(q.y0, d_y, lr, betas, eps))


def test_meso_two_steps_keep_theta_and_use_c_k():
    q = Quadratic()
    opts = dict(eta=0.2, gamma_1=0.5, c0=0.3)
    problem = build(q, "MESO", return_grad=True, MESO=opts)
    m = QuadraticMaths(q)
    y_ref, theta_ref = q.y0, q.y0.copy()        # θ starts as a copy of y_0
    for k in (2, 3):
        gx, y, value = step(problem, q, 0.0, k)
        y_ref, theta_ref, gx_ref, value_ref = meso_step(m, q.x0, y_ref, theta_ref, k, q.lr, opts)
        close(y, y_ref)
        close(gx, gx_ref)
        close(value, value_ref)
        close(problem._fo_op_solver.theta[0].numpy(), theta_ref)


@pytest.mark.parametrize("penalty", ["difference", "gradient"])
def test_pgdo_two_steps_with_gamma_ramp(penalty):
    q = Quadratic()
    opts = dict(y_hat_lr=0.2, gamma_init=0.5, gamma_max=3.0, gamma_argmax_step=4,
                update_y_ahead=False, penalty=penalty)
    K = 3
    problem = build(q, "PGDO", lower_iters=K, return_grad=True, PGDO=opts)
    m = QuadraticMaths(q)
    y_ref, y_hat_ref, gamma_ref = q.y0, q.y0.copy(), 0.5
    for k in (0, 1):
        gx, y, loss = step(problem, q, 0.0, k)
        y_ref, y_hat_ref, gamma_ref, gx_ref, loss_ref = pgdo_step(
            m, q.x0, y_ref, y_hat_ref, gamma_ref, K, q.lr, opts)
        close(y, y_ref)
        close(gx, gx_ref)
        close(loss, loss_ref)
        close(problem._fo_op_solver.y_hat[0].numpy(), y_hat_ref)
        assert problem._fo_op_solver.gamma == pytest.approx(gamma_ref)
    assert gamma_ref == pytest.approx(1.75)


def test_pgdo_gradient_penalty_is_second_order_and_misspelt_key_is_read():
    q = Quadratic()
    opts = dict(y_hat_lr=0.2, gamma_init=2.0, gamma_max=1.0, gamma_argmax_step=10,
                penalty="gradient")
    K = 2
    problem = build(q, "PGDO", lower_iters=K, return_grad=True,
                    PGDO=dict(opts, updata_y_ahead=True))
    assert problem.boat_configs["PGDO"]["update_y_ahead"] is True
    gx, y, _ = step(problem, q, 0.0, 0)
    m = QuadraticMaths(q)
    ref = dict(opts, update_y_ahead=True)
    y_ref, _, gamma_ref, gx_ref, _ = pgdo_step(m, q.x0, q.y0, q.y0.copy(), 2.0, K, q.lr, ref)
    close(y, y_ref)
    close(gx, gx_ref)
    assert problem._fo_op_solver.gamma == pytest.approx(2.0) == gamma_ref   # max raised to init
    # an inert (detached) penalty would leave only ω∇_xF
    assert np.linalg.norm(gx_ref - 0.5 * q.mu * q.x0) > 0.1 * np.linalg.norm(gx_ref)


def test_alto_step_uses_the_partial_upper_gradient():
    q = Quadratic()
    problem = build(q, "ALTO", return_grad=True)
    gx, y, loss = step(problem, q, 0.0, 0)
    y_ref, gx_ref, loss_ref = alto_step(QuadraticMaths(q), q.x0, q.y0, q.lr)
    close(y, y_ref)
    close(gx, gx_ref)
    close(loss, loss_ref)


@pytest.mark.parametrize("maximize", [False, True])
def test_gaffo_step(maximize):
    q = square_quadratic()
    opts = dict(sigma=0.1, use_sign_lower_step=False, maximize=maximize,
                sync_lower_from_upper=True)
    problem = build(q, "GAFFO", return_grad=True, GAFFO=dict(opts, gap_lambda=0.5))
    gx, y, loss = step(problem, q, 0.0, 0)
    ref = dict(opts, **{"lambda": 0.5})
    y_ref, gx_ref, loss_ref = gaffo_step(QuadraticMaths(q), q.x0, q.y0, q.lr, ref)
    close(y, y_ref)
    close(gx, gx_ref)
    close(loss, loss_ref)


def test_gaffo_sign_step_projection_and_no_sync():
    q = square_quadratic()
    opts = dict(sigma=0.1, use_sign_lower_step=True, maximize=False,
                sync_lower_from_upper=False, lower_step_size=0.05)
    calls = []

    def clip(values):                    # a projection returning new values
        calls.append(len(values))
        return [jt.clamp(v, -0.2, 0.2) for v in values]

    problem = build(q, "GAFFO", return_grad=True, GAFFO=dict(opts, projection=clip))
    gx, y, _ = step(problem, q, 0.0, 0)
    m = QuadraticMaths(q)
    y_ref = np.clip(q.y0 - 0.05 * np.sign(m.fy(q.x0, q.y0)), -0.2, 0.2)
    b = m.fy(q.x0, y_ref)
    p = m.fy(q.x0, np.clip(y_ref + 0.1 * b, -0.2, 0.2))
    a = m.Fy(q.x0, y_ref) / 1.0 - (p - b)
    close(y, y_ref)
    close(gx, a)
    assert calls == [1, 1]               # after the LL step and on the probe
