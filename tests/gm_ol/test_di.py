"""DI: after the inner loop the LL initial point takes a step along ∂F(x, y_K)/∂y_0."""

import jittor as jt
import numpy as np

from quadratic import Quadratic, initial_point_gradient, rel_err

K, DI_LR, UL_LR = 4, 0.3, 0.1


def _build(q, **options):
    return q.build(["DI", "NGD"], ["RAD"], lower_iters=K, DI={"lr": DI_LR},
                   ul_opt=lambda ps: jt.optim.SGD(ps, lr=UL_LR), **options)


def test_oracle_initial_point_gradient_matches_finite_differences():
    q = Quadratic()

    def value(y0):
        return q.F(q.x0, q.trajectory(q.x0, y0, K)[-1])

    eps = 1e-6
    fd = np.array([(value(q.y0 + eps * e) - value(q.y0 - eps * e)) / (2 * eps)
                   for e in np.eye(q.m)])
    assert rel_err(initial_point_gradient(q, q.x0, q.y0, K), fd) < 1e-7


def test_warm_start_then_initialisation_step():
    q = Quadratic()
    problem = _build(q)                              # copy_last_param: true (default)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    y_K = q.trajectory(q.x0, q.y0, K)[-1]
    expected_y = y_K - DI_LR * initial_point_gradient(q, q.x0, q.y0, K)
    expected_x = q.x0 - UL_LR * q.unrolled_hypergradient(q.x0, q.y0, K)
    assert rel_err(q.lower.value.numpy(), expected_y) < 1e-5
    assert rel_err(q.lower.value.numpy(), y_K) > 1e-3   # the DI step is visible
    assert rel_err(q.upper.value.numpy(), expected_x) < 1e-5


def test_without_warm_start_the_initial_point_moves():
    q = Quadratic()
    problem = _build(q, copy_last_param=False)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected_y = q.y0 - DI_LR * initial_point_gradient(q, q.x0, q.y0, K)
    assert rel_err(q.lower.value.numpy(), expected_y) < 1e-5


def test_di_lr_defaults_to_upper_lr():
    q = Quadratic()
    problem = q.build(["DI", "NGD"], ["RAD"], lower_iters=K, copy_last_param=False,
                      ul_opt=lambda ps: jt.optim.SGD(ps, lr=UL_LR))
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected_y = q.y0 - UL_LR * initial_point_gradient(q, q.x0, q.y0, K)
    assert rel_err(q.lower.value.numpy(), expected_y) < 1e-5
