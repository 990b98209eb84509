"""jboat.distributed in one process: no-ops, config checks, the reduction hook.

The multi-process behaviour is tested under mpirun in tests/test_mpi.py.
"""

import logging

import jittor as jt
import numpy as np
import pytest

import jboat
from jboat import distributed as dist
from jboat.higher_jit import innerloop_ctx
from quadratic import Quadratic, Vector, rel_err


def test_outside_mpi_every_helper_is_a_no_op():
    assert not dist.in_mpi()
    assert (dist.rank(), dist.world_size(), dist.is_main_process()) == (0, 1, True)
    values = [jt.array([1.0, 2.0]), None]
    assert dist.all_reduce(values, "sum")[0] is values[0]
    assert dist.mean_across_ranks(values)[1] is None
    assert dist.ranks_where(True) == [0] and dist.ranks_where(False) == []
    assert dist.parallel_mode({"data_parallel": True}, batched=True) is None
    assert dist.data_parallel_reduction({"data_parallel": True}) is None
    dist.check_same_on_all_ranks(3, "tasks")
    dist.barrier()
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        dist.all_reduce(values, "max")


def test_data_parallel_alone_changes_nothing_in_one_process():
    # one process holds all the data: the full-data hyper-gradient as before
    q = Quadratic()
    plain, _ = q.build(["NGD"], ["RAD"], lower_iters=4, return_grad=True).run_iter(
        q.ll_feed(), q.ul_feed(), 0)
    q2 = Quadratic()
    flagged, _ = q2.build(["NGD"], ["RAD"], lower_iters=4, return_grad=True,
                          data_parallel=True).run_iter(q2.ll_feed(), q2.ul_feed(), 0)
    np.testing.assert_array_equal(flagged[0].numpy(), plain[0].numpy())
    assert rel_err(plain[0].numpy(), q.unrolled_hypergradient(q.x0, q.y0, 4)) < 1e-4


@pytest.mark.parametrize("options, culprit", [
    ({"fo_op": "VSO"}, "VSO"),
    ({"gm_op": ["DM"], "na_op": ["RAD"], "lower_iters": 1}, "DM"),
])
def test_data_parallel_refuses_operators_that_update_the_ll_variables_themselves(
        options, culprit):
    q = Quadratic()
    build = dict(gm_op=None, na_op=None)
    build.update(options)
    with pytest.raises(jboat.ConfigError, match=f"not supported with {culprit}.*accumulate_grad"):
        q.build(data_parallel=True, **build)


def test_mpi_timeout_must_be_positive():
    with pytest.raises(jboat.ConfigError, match="mpi_timeout"):
        Quadratic().build(["NGD"], ["RAD"], mpi_timeout=0)


def test_gradient_reduction_hook_sees_every_step_gradient():
    # the data-parallel hook (mean over ranks) is a list -> list map on the step
    # gradients, applied before the update and differentiated through
    y0 = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    model = Vector(y0)
    opt = jt.optim.SGD(list(model.parameters()), lr=0.1)
    seen = []

    def halve(grads):
        seen.append(len(grads))
        return [g * 0.5 for g in grads]

    with innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
        diffopt.gradient_reduction = halve
        (y1,) = diffopt.step((fmodel() * fmodel()).sum())
        (y2,) = diffopt.step((fmodel() * fmodel()).sum())
        dy2 = jt.grad(y2.sum(), list(model.parameters()))[0].numpy()
    # g = 2y, halved: y_{t+1} = y_t - 0.1 y_t = 0.9 y_t
    np.testing.assert_allclose(y1.numpy(), 0.9 * y0, rtol=1e-6)
    np.testing.assert_allclose(y2.numpy(), 0.81 * y0, rtol=1e-6)
    np.testing.assert_allclose(dy2, np.full(3, 0.81), rtol=1e-6)
    assert seen == [1, 1]


def test_checkpoint_helpers_round_trip(tmp_path):
    q = Quadratic()
    problem = q.build(["NGD"], ["RAD"], lower_iters=3)
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    path = dist.save_checkpoint(problem, tmp_path / "ckpt.pkl")
    after_one = q.upper.value.numpy().copy()
    problem.run_iter(q.ll_feed(), q.ul_feed(), 1)
    assert rel_err(q.upper.value.numpy(), after_one) > 1e-4
    dist.load_checkpoint(path, problem)
    np.testing.assert_array_equal(q.upper.value.numpy(), after_one)


def test_rank_filter_keeps_rank_zero_and_errors_elsewhere():
    record = logging.LogRecord("jboat", logging.WARNING, __file__, 1, "msg", None, None)
    error = logging.LogRecord("jboat", logging.ERROR, __file__, 1, "msg", None, None)
    assert dist._RankZeroFilter(0).filter(record)
    assert not dist._RankZeroFilter(1).filter(record)
    assert dist._RankZeroFilter(1).filter(error)
