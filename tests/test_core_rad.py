import jittor as jt
import numpy as np

from quadratic import Quadratic, adam_first_step, rel_err


def test_ngd_rad_equals_unrolled_derivative():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=5, return_grad=True)
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected = q.unrolled_hypergradient(q.x0, q.y0, 5)
    assert rel_err(grads[0].numpy(), expected) < 1e-4


def test_return_grad_is_this_iterations_gradient():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3, return_grad=True, copy_last_param=False)
    first, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    second, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    # x and y unchanged (no UL step, no warm start): the same gradient, not twice it
    np.testing.assert_allclose(second[0].numpy(), first[0].numpy(), rtol=1e-6)


def test_adam_upper_optimizer_takes_adam_step():
    q = Quadratic()
    lr, betas, eps = 0.05, (0.9, 0.999), 1e-8
    problem = q.build(["NGD"], ["RAD"], lower_iters=5,
                      ul_opt=lambda ps: jt.optim.Adam(ps, lr=lr, betas=betas, eps=eps))
    g = q.unrolled_hypergradient(q.x0, q.y0, 5)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    expected = adam_first_step(q.x0, g, lr, betas, eps)
    sgd_like = q.x0 - lr * g
    x1 = q.upper.value.numpy()
    assert rel_err(x1, expected) < 1e-5
    assert rel_err(x1, sgd_like) > 1e-2
