"""Terminal operators vs float64 central differences on a non-quadratic problem.

Logistic regression whose per-feature L2 weights exp(x) are the UL variables
(tests/na_ol/na_problems.py). The oracles are float64 numpy re-implementations of
the losses; jboat runs in float32.
"""

import numpy as np

from na_problems import Logistic, MetaLogistic, central_difference
from quadratic import rel_err


def _grad(problem, prob):
    grads, _ = problem.run_iter(prob.ll_feed(), prob.ul_feed(), 0)
    return grads[0].numpy()


def test_rad_matches_central_differences_of_the_unrolled_loss():
    # RAD is the exact derivative of the K-step unrolled UL loss
    prob, K = Logistic(), 5
    expected = central_difference(lambda x: prob.unrolled_loss(x, K), prob.x0)
    assert rel_err(_grad(prob.build(["NGD"], ["RAD"], lower_iters=K), prob), expected) < 1e-4


def test_fd_matches_the_one_step_unrolled_derivative():
    # DARTS' formula is the one-step unrolled derivative, exact as r -> 0 (central
    # difference error O(eps^2)); smaller r than the default 0.01 only adds float32
    # round-off here
    prob = Logistic()
    expected = central_difference(lambda x: prob.unrolled_loss(x, 1), prob.x0)
    grad = _grad(prob.build(["NGD"], ["FD"], lower_iters=1), prob)
    assert rel_err(grad, expected) < 1e-4


def test_cg_and_ns_match_the_derivative_at_the_lower_level_solution():
    # CG and NS are exact in the limit y_K -> y*(x) (LL run to convergence) and, for
    # NS, infinitely many terms; here ‖I - sH‖ <= 0.61 (s = 1), so 40 LL steps and
    # 40 terms leave errors ~1e-9, below float32 round-off
    prob, K = Logistic(), 40
    expected = central_difference(prob.optimal_loss, prob.x0)
    cg = _grad(prob.build(["NGD"], ["CG"], lower_iters=K, CG={"k": 10}), prob)
    ns = _grad(prob.build(["NGD"], ["NS"], lower_iters=K, CG={"k": 40, "tolerance": 0.0}), prob)
    assert rel_err(cg, expected) < 1e-4
    assert rel_err(ns, expected) < 1e-4


def test_iga_matches_its_formula_on_a_non_quadratic_problem():
    # IGA has no exactness limit in general (a single-direction surrogate of the
    # implicit correction), so its float64 formula is the oracle
    prob, K = Logistic(), 3
    w = prob.y0.copy()
    for _ in range(K):
        w = w - prob.lr * prob.lower_grad(prob.x0, w)
    eps = 1e-6
    grad_F_w = central_difference(lambda v: prob.F(prob.x0, v), w, eps)
    grad_f_w = prob.lower_grad(prob.x0, w)
    lam = grad_F_w @ grad_f_w / (grad_f_w @ grad_f_w)
    grad_f_x = 0.5 * np.exp(prob.x0) * w * w
    expected = prob.mu * prob.x0 - lam * grad_f_x
    grad = _grad(prob.build(["NGD"], ["IGA"], lower_iters=K), prob)
    assert rel_err(grad, expected) < 1e-4


def test_iad_matches_central_differences_of_the_meta_loss():
    # the MAML meta-gradient is the exact derivative of Σ_i F_i(y_K^i(θ))
    meta, K = MetaLogistic(), 3
    expected = central_difference(lambda theta: meta.meta_loss(theta, K), meta.theta)
    grads, _ = meta.build(["IAD"], lower_iters=K).run_iter(*meta.feeds(), 0)
    assert rel_err(grads[0].numpy(), expected) < 1e-4
