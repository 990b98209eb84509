"""IAD (MAML) and FOA on a two-task least-squares meta problem (UL model = LL model)."""

import jittor as jt
import numpy as np
import pytest

import jboat
from jboat import ConfigError
from na_problems import MetaRegression
from quadratic import Quadratic, Vector, rel_err

K = 3


def _meta_grad(meta, na_op, **options):
    problem = meta.build(["NGD"], na_op, lower_iters=K, **options)
    grads, _ = problem.run_iter(*meta.feeds(), 0)
    return grads[0].numpy()


def test_iad_is_the_summed_maml_meta_gradient():
    meta = MetaRegression()
    grad = _meta_grad(meta, ["IAD"])
    assert rel_err(grad, meta.meta_gradient(K)) < 1e-4
    # the model keeps the meta-parameters (no warm start from y_K)
    assert rel_err(meta.model.value.numpy(), meta.theta) < 1e-6


def test_foa_iad_is_the_first_order_meta_gradient():
    meta = MetaRegression()
    grad = _meta_grad(meta, ["FOA", "IAD"])
    expected = meta.meta_gradient(K, first_order=True)
    assert rel_err(grad, expected) < 1e-4
    assert rel_err(grad, meta.meta_gradient(K)) > 1e-2


def test_iad_then_cg_differentiates_the_implicit_gradient_through_y0():
    # hparams = y_0: c = (M^K)ᵀ∇F and VJP(Φ, y_0, v) = (M^K)ᵀ(I - sA) v with
    # v = (sA)⁻¹∇F, i.e. Σ_i (M_i^K)ᵀ (sA_i)⁻¹ ∇F_i(y_K)   (upstream semantics, kept)
    meta = MetaRegression()
    grad = _meta_grad(meta, ["IAD", "CG"], CG={"k": 10, "tolerance": 1e-12})
    expected = meta.meta_gradient(
        K, inner=lambda task, g: np.linalg.solve(meta.lr * task["A"], g))
    assert rel_err(grad, expected) < 1e-4


def test_iad_then_ns_sums_one_more_neumann_term():
    meta = MetaRegression()
    k = 2
    grad = _meta_grad(meta, ["IAD", "NS"], CG={"k": k, "tolerance": 0.0})

    def series(task, g):
        M = meta.M(task)
        return sum(np.linalg.matrix_power(M, i) for i in range(k + 2)) @ g

    assert rel_err(grad, meta.meta_gradient(K, inner=series)) < 1e-4


def test_iad_with_ptt_uses_the_selected_step():
    meta = MetaRegression(tasks=1)
    problem = meta.build(["NGD"], ["PTT", "IAD"], lower_iters=K)
    grads, _ = problem.run_iter(*meta.feeds(), 0)
    task = meta.tasks[0]
    ys = [meta.final_iterate(task, t) for t in range(K + 1)]
    k_star = 1 + int(np.argmax([0.5 * np.sum((task["Q"] @ y - task["z"]) ** 2) for y in ys[1:]]))
    expected = np.linalg.matrix_power(meta.M(task), k_star).T @ meta.upper_grad(task, ys[k_star])
    assert rel_err(grads[0].numpy(), expected) < 1e-4


def test_iad_refuses_structurally_different_models():
    q = Quadratic()                                   # UL vector of 3, LL vector of 4
    with pytest.raises(ConfigError, match="same parameters"):
        q.build(["NGD"], ["IAD"], lower_iters=2)


def test_iad_accepts_distinct_models_of_the_same_structure():
    q = Quadratic()
    upper = Vector(np.zeros(4))
    lower = Vector(q.y0)
    config = {"gm_op": ["NGD"], "na_op": ["IAD"], "lower_iters": 2, "return_grad": True,
              "lower_level_model": lower, "upper_level_model": upper,
              "lower_level_var": list(lower.parameters()),
              "upper_level_var": list(upper.parameters()),
              "lower_level_opt": jt.optim.SGD(list(lower.parameters()), lr=q.lr),
              "upper_level_opt": jt.optim.SGD(list(upper.parameters()), lr=0.1)}
    def ll(feed, upper_model, lower_model, **kw):
        y = lower_model(**kw)
        return 0.5 * (y * jt.matmul(feed["A"], y)).sum()

    def ul(feed, upper_model, lower_model, **kw):
        y = lower_model(**kw)
        r = jt.matmul(feed["C"], y) - feed["t"]
        return 0.5 * (r * r).sum()

    problem = jboat.Problem(config, {"lower_level_loss": ll, "upper_level_loss": ul})
    problem.build_ll_solver().build_ul_solver()
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    M = q.M()
    y_K = np.linalg.matrix_power(M, 2) @ q.y0
    expected = np.linalg.matrix_power(M, 2).T @ q.dF_dy(y_K)   # into the UL vector
    assert rel_err(grads[0].numpy(), expected) < 1e-4


def test_iad_refuses_dynamic_initialization():
    meta = MetaRegression()
    with pytest.raises(ConfigError, match="DI and IAD"):
        meta.build(["DI", "NGD"], ["IAD"])
