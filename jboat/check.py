"""Check a problem's hyper-gradient on your own model against finite differences.

:func:`check_hypergradient` compares the hyper-gradient that the configured operators
compute with a central finite difference of the exact map they approximate, along a
few random directions. The oracle uses first derivatives only — the lower level is
run with your real ``jittor.optim`` optimizer and Jittor's stock kernels — so it
trusts nothing that the operators rely on (second derivatives, layer substitutes,
differentiable optimizers, checkpointing).

The map: ``Φ(x) = F(x, y_K(x))`` with ``y_K(x)`` the result of ``lower_iters`` steps of
the lower-level optimizer, from fresh optimizer state, started at the current
lower-level variables, on the lower-level loss (summed over the tasks of a
meta-batch). NGD + RAD differentiates exactly this map, so its error is round-off
and the finite-difference error; other NA operators approximate it (FD: a finite-
difference Hessian-vector product; CG/NS/IGA: the implicit-function derivative,
equal to it only once the lower level has converged), and the check reports how
far they are.
"""

import dataclasses
import logging

import jittor as jt
import numpy as np

from .errors import ConfigError, ConfigTypeError
from .state import load_optimizer_state, optimizer_state, restore_vars, snapshot_vars

__all__ = ["check_hypergradient", "HypergradientCheck"]

logger = logging.getLogger("jboat")


@dataclasses.dataclass
class HypergradientCheck:
    """Result of :func:`check_hypergradient`.

    Attributes:
        operator: per direction, ``d · g`` with ``g`` the operators' hyper-gradient.
        finite_difference: per direction, ``(Φ(x + εd) - Φ(x - εd)) / 2ε``.
        relative_errors: per direction, ``|a - b| / max(|a|, |b|)`` (0 where both are 0).
        epsilon: the step ``ε`` (directions have unit norm).
        value: ``Φ(x)`` at the current point.
    """
    operator: list
    finite_difference: list
    relative_errors: list
    epsilon: float
    value: float

    @property
    def max_relative_error(self):
        return max(self.relative_errors)

    def passed(self, tolerance):
        """True when every direction agrees to ``tolerance`` (relative)."""
        return self.max_relative_error <= tolerance

    def __str__(self):
        rows = [f"{'direction':>9}  {'operator':>14}  {'finite diff.':>14}  {'rel. error':>10}"]
        for i, (a, b, e) in enumerate(zip(self.operator, self.finite_difference,
                                          self.relative_errors)):
            rows.append(f"{i:>9}  {a:>14.6e}  {b:>14.6e}  {e:>10.2e}")
        return "\n".join(rows)


def _fresh_state(opt):
    """The optimizer's state as a new optimizer would have it: no step taken, zero
    momentum buffers and moments (the inner loop's differentiable twin starts so)."""
    state = optimizer_state(opt)
    state["n_step"] = 0
    for group in state["groups"]:
        for key in ("values", "m"):
            if key in group:
                group[key] = [jt.zeros_like(v).stop_grad() for v in group[key]]
        group.pop("grads", None)
    return state


def _as_tasks(ll_feed, ul_feed, batched):
    if batched:
        if not isinstance(ll_feed, (list, tuple)) or not isinstance(ul_feed, (list, tuple)):
            raise ConfigTypeError("With accumulate_grad, pass lists of task feeds "
                                  "(ll_feeds, ul_feeds), as to run_iter.")
        return list(zip(ll_feed, ul_feed))
    return [(ll_feed, ul_feed)]


def _scalar(value):
    return float(value.item()) if isinstance(value, jt.Var) else float(value)


def check_hypergradient(problem, ll_feed, ul_feed, directions=3, epsilon=None, seed=0,
                        current_iter=0):
    """Compare ``problem``'s hyper-gradient with a central finite difference.

    Args:
        problem: a :class:`jboat.Problem` with ``gm_op: [NGD]`` and any ``na_op``,
            after ``build_ll_solver()`` and ``build_ul_solver()``.
        ll_feed, ul_feed: the feeds you pass to ``run_iter`` (lists of tasks with
            ``accumulate_grad``).
        directions: how many random unit directions in the upper-level variables.
        epsilon: finite-difference step; by default ``1e-6`` for float64 variables
            and ``1e-2`` for float32 ones (float32 checks are coarse: convert the
            models to float64 and set ``jt.flags.auto_convert_64_to_32 = 0`` for a
            tight one).
        seed: seed of the directions.
        current_iter: the iteration index passed to ``run_iter``.

    Returns:
        :class:`HypergradientCheck` (``str()`` of it is a table).

    Nothing changes: the variables, both models' parameters and buffers, the
    optimizers' state and the operators' state are restored, and nothing is logged as
    a loss. Cost: one ``run_iter`` plus ``2 · directions + 1`` lower-level solves of
    ``lower_iters`` first-order steps each.
    """
    if getattr(problem, "_fo_op", None) is not None:
        raise ConfigError("check_hypergradient covers gm_op/na_op problems; first-order "
                          f"operators ({problem._fo_op}) solve a reformulated problem "
                          "with no unrolled map to difference.")
    if problem._ll_solver is None or (problem._ul_solver is None and not any(
            getattr(c, "computes_upper_gradient", False) for c in problem._operator_classes)):
        raise ConfigError("Call build_ll_solver() and build_ul_solver() before "
                          "check_hypergradient().")
    if list(problem._gm_op) != ["NGD"]:
        raise ConfigError(f"check_hypergradient differences the map of gm_op [NGD] (K steps "
                          f"of your lower-level optimizer); got gm_op {problem._gm_op}. "
                          "Check with NGD and the same na_op.")
    if not isinstance(directions, int) or isinstance(directions, bool) or directions < 1:
        raise ConfigTypeError(f"directions must be a positive int, got {directions!r}.")
    cfg = problem.boat_configs
    tasks = _as_tasks(ll_feed, ul_feed, cfg["accumulate_grad"])
    ul_vars = [v for v in problem._ul_var if not v.is_stop_grad()]
    if not ul_vars:
        raise ConfigError("upper_level_var holds no trainable variable: nothing to check.")
    ll_opt, steps = problem._lower_opt, cfg["lower_iters"]

    saved = problem._capture_state()
    saved_records = (list(problem._log_results), list(problem.loss_history))
    saved_return_grad = cfg["return_grad"]
    x0 = snapshot_vars(ul_vars)
    y0 = snapshot_vars(problem._tracked_vars())

    def restore():
        problem._restore_state(saved)
        problem._log_results.clear()
        problem._log_results.extend(saved_records[0])
        problem.loss_history.clear()
        problem.loss_history.extend(saved_records[1])

    def phi(offset):
        """F(x0 + offset, y_K): the exact map, by first-order steps of the real
        optimizer. Restores the lower level before each task."""
        x = [x + o for x, o in zip(x0, offset)]
        total = 0.0
        for ll_fd, ul_fd in tasks:
            # the UL variables are among the tracked ones (MAML: they are the LL ones)
            restore_vars(problem._tracked_vars(), y0)
            restore_vars(ul_vars, x)
            load_optimizer_state(ll_opt, _fresh_state(ll_opt))
            for _ in range(steps):
                ll_opt.step(problem._ll_loss(ll_fd, problem._ul_model, problem._ll_model))
            with jt.no_grad():
                total += _scalar(problem._ul_loss(ul_fd, problem._ul_model, problem._ll_model))
        return total

    try:
        cfg["return_grad"] = True
        grads, _ = problem.run_iter(ll_feed, ul_feed, current_iter)
        index = {id(v): i for i, v in enumerate(problem._ul_var)}
        grads = [grads[index[id(v)]].numpy().astype(np.float64) for v in ul_vars]
        restore()
        dtype = ul_vars[0].dtype
        if epsilon is None:
            epsilon = 1e-6 if str(dtype) == "float64" else 1e-2
        rng = np.random.RandomState(seed)
        operator, differences, errors = [], [], []
        value = phi([jt.zeros_like(x) for x in x0])
        for _ in range(directions):
            d = [rng.randn(*x.shape) for x in x0]
            norm = np.sqrt(sum(float((di ** 2).sum()) for di in d))
            d = [di / norm for di in d]
            a = float(sum((g * di).sum() for g, di in zip(grads, d)))
            plus = phi([jt.array(epsilon * di).cast(x.dtype) for di, x in zip(d, x0)])
            minus = phi([jt.array(-epsilon * di).cast(x.dtype) for di, x in zip(d, x0)])
            b = (plus - minus) / (2 * epsilon)
            scale = max(abs(a), abs(b))
            operator.append(a)
            differences.append(b)
            errors.append(0.0 if scale == 0 else abs(a - b) / scale)
        result = HypergradientCheck(operator, differences, errors, float(epsilon), value)
        logger.debug("check_hypergradient:\n%s", result)
        return result
    finally:
        cfg["return_grad"] = saved_return_grad
        restore()
