"""Fusion barriers: the context, and Problem's rerun of an iteration whose fused kernel
Jittor failed to compile (simulated here; the real trigger, a DARTS cell, is in
tests/test_darts_search.py)."""

import logging

import jittor as jt
import numpy as np
import pytest

from jboat.higher_jit import fusion
from quadratic import Quadratic

COMPILE_ERROR = ("Wrong inputs arguments ... [f 1204 parallel_compiler.cc:331] Error happend "
                 "during compilation:\n Compile fused operator(215/217)failed")


def test_barriers_cut_at_module_outputs_and_restore_the_class():
    original = jt.Module.__dict__["__call__"]
    layer = jt.nn.Linear(2, 2)
    x = jt.ones((1, 2))
    assert not layer(x).is_stop_fuse()
    with fusion.fusion_barriers(1):
        assert jt.Module.__dict__["__call__"] is not original
        with fusion.fusion_barriers(1):
            assert layer(x).is_stop_fuse()
        assert layer(x).is_stop_fuse()
    assert jt.Module.__dict__["__call__"] is original
    with fusion.fusion_barriers(2):
        assert jt.flags.no_fuse == 1 and (x * 2).is_stop_fuse()
    assert jt.flags.no_fuse == 0
    with fusion.fusion_barriers(0):
        assert jt.Module.__dict__["__call__"] is original


def test_compile_failures_are_told_apart():
    assert fusion.is_compile_failure(RuntimeError(COMPILE_ERROR))
    assert not fusion.is_compile_failure(RuntimeError("shape mismatch"))
    assert not fusion.is_compile_failure(ValueError(COMPILE_ERROR))


def _failing_reads(problem, failures):
    """Make the first ``failures`` host reads of ``problem`` fail as a bad kernel does."""
    original = problem._read_back
    calls = {"n": 0}

    def read_back(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise RuntimeError(COMPILE_ERROR)
        return original(*args, **kwargs)

    problem._read_back = read_back
    return calls


def test_a_compile_failure_reruns_the_iteration_with_barriers(caplog):
    q = Quadratic()
    reference = q.build(["NGD"], ["RAD"], lower_iters=3, return_grad=True)
    expected = [g.numpy() for g in reference.run_iter(q.ll_feed(), q.ul_feed(), 0)[0]]
    problem = q.build(["NGD"], ["RAD"], lower_iters=3, return_grad=True)
    calls = _failing_reads(problem, failures=1)
    caplog.set_level(logging.WARNING, logger="jboat")
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert calls["n"] == 2 and problem._fusion_level == 1
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-6)
    assert any("fusion barriers" in r.getMessage() for r in caplog.records)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)          # the level is kept
    assert problem._fusion_level == 1 and calls["n"] == 3


def test_the_state_is_restored_before_the_rerun_and_other_errors_propagate():
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3)
    before = [v.numpy().copy() for v in problem._tracked_vars()]
    _failing_reads(problem, failures=3)                    # every level fails
    with pytest.raises(RuntimeError, match="compilation"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert problem._fusion_level == fusion.MAX_LEVEL
    for v, b in zip(problem._tracked_vars(), before):
        np.testing.assert_array_equal(v.numpy(), b)
    other = q.build(["NGD"], ["RAD"], lower_iters=3)

    def broken(*args, **kwargs):
        raise RuntimeError("something else")

    other._read_back = broken
    with pytest.raises(RuntimeError, match="something else"):
        other.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert other._fusion_level == 0


def test_building_executes_lazy_weights_and_optimizer_state():
    """Weights made by an op (a cast, a scaled array) are pending until something reads
    them; build_ll_solver executes them (and the optimizers' buffers) once, so that the
    roll-back snapshots never point into a graph that fails to compile."""
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3,
                      ll_opt=lambda ps: jt.optim.SGD(ps, lr=0.1, momentum=0.9))
    jt.sync_all()
    q.lower.value.update(jt.array(q.y0.astype(np.float32)) * 2.0)       # a pending op
    assert jt.liveness_info()["lived_ops"] > 0
    problem.build_ll_solver()
    assert jt.liveness_info()["lived_ops"] == 0
    np.testing.assert_allclose(q.lower.value.numpy(), 2 * q.y0, rtol=1e-6)


def test_after_a_failure_the_feeds_are_executed_before_each_iteration(monkeypatch):
    """Jittor fuses a pending ``jt.array`` op into its consumers whatever the barriers say;
    every failing kernel seen began with one. At level >= 1 the feeds are executed
    before the graph is built on them; at level 0 nothing extra is synchronised."""
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3)
    executed = []
    original = fusion.execute_inputs
    monkeypatch.setattr(fusion, "execute_inputs",
                        lambda tree: executed.append(len(fusion.feed_vars(tree))) or
                        original(tree))
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert executed == []
    _failing_reads(problem, failures=1)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 2)
    assert problem._fusion_level == 1 and executed == [4, 4]   # A, B, C, t; mu is a float
