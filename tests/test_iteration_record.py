"""What one ``run_iter`` reads back and records: a single host read with the defaults,
loss records equal to the values the iteration computed (closed form), and a NaN
found after the UL step still rolls every state back."""

import os
import sys

import jittor as jt
import numpy as np
import pytest
from jboat import boat_opt

from quadratic import Quadratic, gda_trajectory, lower_loss, upper_adam_state, upper_loss


@pytest.fixture
def host_reads(monkeypatch):
    """Records every host synchronisation: ``jt.sync``, ``jt.sync_all``, ``Var.item()``
    and ``Var.numpy()`` calls, the batched read ``jboat.boat_opt._read_scalars`` as one
    entry (a ``jt.sync`` of all its Vars, then copies). Not recorded: the ``jt.sync``
    of the parameters that Jittor's own ``Optimizer.backward`` makes before each step
    (it computes nothing new: the parameters are computed already)."""
    calls, inside = [], []
    jittor_dir = os.path.dirname(jt.__file__)

    def counting(name, original):
        def wrapper(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if not inside and not caller.startswith(jittor_dir):
                calls.append(name)
            return original(*args, **kwargs)
        return wrapper

    def batched(scalars, **kwargs):
        calls.append("read_back")
        inside.append(1)
        try:
            return original_read(scalars, **kwargs)
        finally:
            inside.pop()
    original_read = boat_opt._read_scalars
    monkeypatch.setattr(boat_opt, "_read_scalars", batched)
    monkeypatch.setattr(jt.Var, "item", counting("item", jt.Var.item))
    monkeypatch.setattr(jt.Var, "numpy", counting("numpy", jt.Var.numpy))
    monkeypatch.setattr(jt, "sync", counting("sync", jt.sync))
    monkeypatch.setattr(jt, "sync_all", counting("sync_all", jt.sync_all))
    return calls


@pytest.mark.parametrize("gm_op, na_op, options", [
    (["NGD"], ["RAD"], {}),
    (["NGD"], ["FD"], {}),
    (["NGD"], ["IGA"], {}),
    (["NGD"], ["CG"], {"CG": {"k": 5, "tolerance": 0.0}}),
    (["NGD"], ["NS"], {"CG": {"k": 5, "tolerance": 0.0}}),
    (["GDA", "NGD"], ["RAD"], {}),
    (["DI", "NGD"], ["RAD"], {}),
    (["DM", "NGD"], ["RAD"], {"lower_iters": 1}),
], ids=lambda v: "+".join(v) if isinstance(v, list) else "")
def test_one_host_read_per_iteration_with_the_defaults(host_reads, gm_op, na_op, options):
    q = Quadratic()
    options = dict({"lower_iters": 4}, **options)
    problem = q.build(gm_op, na_op, ul_opt=lambda ps: jt.optim.Adam(ps, lr=0.05), **options)
    assert problem.boat_configs["nan_guard"] and problem.boat_configs["track_losses"]
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    ll, ul = q.ll_feed(), q.ul_feed()
    del host_reads[:]
    results, _ = problem.run_iter(ll, ul, 1)
    assert host_reads == ["read_back"], host_reads
    # everything reported is a plain float, and the loss record is complete
    values = [v for r in results for d in [r] + [x for x in r.values() if isinstance(x, dict)]
              for v in d.values()]
    assert not any(isinstance(v, jt.Var) for v in values)
    assert [r["iter"] for r in problem.loss_history] == [0, 1]
    assert all(np.isfinite(v) for r in problem.loss_history for v in r.values())


def test_a_meta_batch_runs_task_by_task_and_is_read_once(host_reads):
    """accumulate_grad over three tasks: one execution pass per task (each task's graph
    runs, and is freed, before the next is built), one host read at the end; the summed
    hyper-gradient is that of three separate one-task iterations."""
    q = Quadratic()
    tasks = 3
    problem = q.build(["NGD"], ["RAD"], lower_iters=3, accumulate_grad=True, return_grad=True)
    problem.run_iter([q.ll_feed()] * tasks, [q.ul_feed()] * tasks, 0)
    del host_reads[:]
    grads, _ = problem.run_iter([q.ll_feed()] * tasks, [q.ul_feed()] * tasks, 1)
    assert host_reads == ["sync"] * tasks + ["read_back"], host_reads
    single = q.build(["NGD"], ["RAD"], lower_iters=3, return_grad=True)
    one, _ = single.run_iter(q.ll_feed(), q.ul_feed(), 0)
    np.testing.assert_allclose(grads[0].numpy(), tasks * one[0].numpy(), rtol=1e-5)


def test_loss_record_is_the_last_step_objective_and_the_hypergradient_upper_loss():
    q = Quadratic()
    K = 4
    problem = q.build(["NGD"], ["RAD"], lower_iters=K)
    results, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    ys = q.trajectory(q.x0, q.y0, K)
    record = problem.loss_history[-1]
    # f at y_{K-1} (the last LL step's objective), F at y_K with x before the UL step
    np.testing.assert_allclose(record["ll_loss"], q.f(q.x0, ys[K - 1]), rtol=1e-5)
    np.testing.assert_allclose(record["ul_loss"], q.F(q.x0, ys[K]), rtol=1e-5)
    upper = [r["gradient_operator_results"]["upper_loss"] for r in results
             if "gradient_operator_results" in r]
    assert upper == [record["ul_loss"]]
    # the losses after the steps are one call away
    x1, y_k = q.upper.value.numpy().astype(float), q.lower.value.numpy().astype(float)
    f_after, F_after = problem.evaluate_losses(q.ll_feed(), q.ul_feed())
    np.testing.assert_allclose([f_after, F_after], [q.f(x1, y_k), q.F(x1, y_k)], rtol=1e-5)


def test_loss_record_under_gda_is_the_aggregated_objective():
    q = Quadratic()
    K, a0, decay = 3, 0.5, 0.8
    problem = q.build(["GDA", "NGD"], ["RAD"], lower_iters=K,
                      GDA={"alpha_init": a0, "alpha_decay": decay})
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    ys, alphas = gda_trajectory(q, q.x0, q.y0, K, a0, decay), [a0 * decay ** k for k in range(K)]
    alpha, y = alphas[K - 1], ys[K - 1]
    expected = alpha * q.F(q.x0, y) + (1 - alpha) * q.f(q.x0, y)
    np.testing.assert_allclose(problem.loss_history[-1]["ll_loss"], expected, rtol=1e-5)


def test_loss_record_over_tasks_is_their_mean():
    q = Quadratic()
    K = 3
    problem = q.build(["NGD"], ["RAD"], lower_iters=K, accumulate_grad=True)
    t2 = q.t + 1.0
    ul2 = q.ul_feed()
    ul2["t"] = jt.array(t2.astype(np.float32))
    problem.run_iter([q.ll_feed(), q.ll_feed()], [q.ul_feed(), ul2], 0)
    y = q.trajectory(q.x0, q.y0, K)[K]
    r2 = q.C @ y - t2
    F2 = 0.5 * r2 @ r2 + 0.5 * q.mu * q.x0 @ q.x0
    np.testing.assert_allclose(problem.loss_history[-1]["ul_loss"],
                               0.5 * (q.F(q.x0, y) + F2), rtol=1e-5)


def _assert_same(before, after):
    for a, b in zip(before[0] + before[2] + before[3], after[0] + after[2] + after[3]):
        np.testing.assert_array_equal(a, b)
    assert before[1] == after[1]


def test_nan_hypergradient_is_caught_after_the_step_and_rolled_back():
    # the check runs after the UL (Adam) step: the rollback must undo that step too
    q = Quadratic()
    state = {"poison": False}

    def upper(feed, upper_model, lower_model, **kwargs):
        value = upper_loss(feed, upper_model, lower_model, **kwargs)
        if state["poison"]:
            value = value + jt.sqrt(upper_model().sum() * 0 - 1)
        return value
    problem = q.build(["NGD"], ["RAD"], lower_iters=3,
                      ul_opt=lambda ps: jt.optim.Adam(ps, lr=0.05),
                      losses={"lower_level_loss": lower_loss, "upper_level_loss": upper})
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    before, logged = upper_adam_state(problem), len(problem._log_results)
    state["poison"] = True
    with pytest.raises(FloatingPointError, match=r"hyper-gradient operator NGD\+RAD \(upper"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    _assert_same(before, upper_adam_state(problem))
    assert [r["iter"] for r in problem.loss_history] == [0]
    assert len(problem._log_results) == logged


def test_nan_from_the_upper_step_is_named_and_rolled_back():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3,
                      ul_opt=lambda ps: jt.optim.Adam(ps, lr=0.05))
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    before = upper_adam_state(problem)
    opt = problem.boat_configs["upper_level_opt"]
    opt.lr = float("nan")
    with pytest.raises(FloatingPointError, match=r"UL step"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    _assert_same(before, upper_adam_state(problem))
    opt.lr = 0.05
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    assert np.isfinite(q.upper.value.numpy()).all()
