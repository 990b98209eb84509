"""DM: dual multiplier, the single-loop averaged method of multipliers (sl-BAMM)."""

import collections
import logging

import jittor as jt
import numpy as np

from ..base import SingleLoopSolver
from ..errors import ConfigError
from ..higher_jit import functional_view
from ..operation_registry import Operation_REGISTRY, operators_by_role, register_class
from ..options import Option
from ..plan import HyperGrads
from ..utils.op_utils import (apply_custom_grads, clear_custom_grads, grads_with_zeros,
                              list_tensor_matmul, update_tensor_grads, vjp)

__all__ = ["DM", "DMSchedule", "DMDerivatives", "dm_schedule", "dm_derivatives",
           "multiplier_step", "STRATEGIES"]

logger = logging.getLogger("jboat")

#: strategy -> (power of α in η, power of α in λ), used with an aggregated objective
STRATEGIES = {"s1": (2, 7), "s2": (1, 5), "s3": (0, 3)}

#: keeps the line-search denominator of the multiplier step away from zero
CG_EPSILON = 1e-12

DMSchedule = collections.namedtuple("DMSchedule", "alpha eta lam")
DMSchedule.__doc__ = """Step sizes of one DM call: aggregation weight ``alpha`` (None
without aggregation), multiplier step ``eta`` and UL learning rate ``lam``."""

DMDerivatives = collections.namedtuple("DMDerivatives", "g_y F_y F_x Hv Jv")
DMDerivatives.__doc__ = """Derivatives at ``(x, y)``: ``g_y = ∇_y φ``, ``F_y = ∇_y F``,
``F_x = ∇_x F``, ``Hv = ∇²_yy φ · v``, ``Jv = ∇²_xy φ · v`` (lists of Vars; ``g_y`` keeps
its graph so that further Hessian-vector products can be taken)."""


def dm_schedule(k, s, lam0, eta0, tau, p, mu0, strategy, aggregated):
    """Step sizes of UL iteration ``k`` (0-based) (docs/operators.md, the DM row).

    With aggregation: ``α = μ0 (k+1)^{-1/p}``, ``η = (k+1)^{-τ/2} α^a s`` and
    ``λ = (k+1)^{-3τ/2} α^b s`` with ``(a, b) = (2, 7), (1, 5), (0, 3)`` for strategy
    ``s1, s2, s3``. Without: ``λ = λ0 (k+1)^{-τ} s`` and ``η = η0 (k+1)^{-τ/2} s``.

    Args:
        k: UL iteration counter.
        s: LL learning rate; lam0: the UL optimizer's constructor learning rate.
        tau, p, mu0, eta0, strategy: the DM options.
        aggregated: whether the step objective is aggregated.

    Returns:
        :class:`DMSchedule` of Python floats (no device work).
    """
    k1 = float(k + 1)
    if aggregated:
        eta_power, lam_power = STRATEGIES[strategy]
        alpha = mu0 * k1 ** (-1.0 / p)
        eta = k1 ** (-tau / 2.0) * alpha ** eta_power * s
        lam = k1 ** (-1.5 * tau) * alpha ** lam_power * s
        return DMSchedule(alpha, eta, lam)
    return DMSchedule(None, eta0 * k1 ** (-tau / 2.0) * s, lam0 * k1 ** (-tau) * s)


def dm_derivatives(phi, upper_loss, y, x, v):
    """Every derivative one DM step needs, at the point where the losses were built.

    Args:
        phi: scalar LL step objective ``φ(x, y)`` (``f`` or the aggregated loss).
        upper_loss: scalar ``F(x, y)``.
        y: LL variables (leaves) the losses were evaluated at; x: UL variables.
        v: the multiplier, aligned with ``y``.

    Returns:
        :class:`DMDerivatives`. Cost: two gradients and one Hessian-vector product
        (one backward through ``∇_y φ`` for both ``Hv`` and ``Jv``).
    """
    y, x = list(y), list(x)
    g_y = grads_with_zeros(phi, y)
    upper = grads_with_zeros(upper_loss, y + x)
    mixed = vjp(g_y, y + x, v)
    n = len(y)
    return DMDerivatives(g_y, upper[:n], upper[n:], mixed[:n], mixed[n:])


def multiplier_step(v, residual, eta=None, hessian_residual=None):
    """One update of the multiplier along the residual ``r = Hv − F_y``.

    Gradient mode (``eta`` given): ``v − η r``, a plain SGD step on
    ``½ vᵀHv − F_yᵀv``. Line-search mode (``hessian_residual = H r`` given):
    ``v − ρ r`` with ``ρ = ||r||² / (<r, Hr> + 1e-12)``, the exact minimiser of that
    quadratic along ``−r`` (steepest descent). Inner products
    and norms are over the concatenation of all entries.

    Returns:
        list of detached Vars aligned with ``v``.
    """
    if hessian_residual is None:
        if eta is None:
            raise ValueError("multiplier_step needs eta (gradient mode) or "
                             "hessian_residual (line-search mode).")
        step = eta
    else:
        step = list_tensor_matmul(residual, residual) / (
            list_tensor_matmul(residual, hessian_residual) + CG_EPSILON)
    return [(vi - ri * step).detach() for vi, ri in zip(v, residual)]


def _with_attribute(role, attribute):
    """Registered operators of ``role`` whose class sets ``attribute``, in chain order."""
    return [n for n in operators_by_role(role) if getattr(Operation_REGISTRY[n], attribute, None)]


@register_class
class DM(SingleLoopSolver):
    """Dual multiplier: one joint step of the LL variables, a multiplier ``v`` and
    the UL variables per UL iteration (single-loop bi-level averaged method of
    multipliers).

    With ``k = current_iter``, ``ỹ`` the LL weights it starts from (the real ones, or
    the latest fast weights ``y_K`` of an inner loop of ``K = lower_iters`` steps run
    before it; the method is ``K = 1``) taken as a fresh leaf, and ``φ`` the plan's
    step objective (aggregated at ``α_k = μ0 (k+1)^{-1/p}`` when the plan aggregates,
    else ``f``), all derivatives at ``(x, ỹ)`` (partial derivatives):

    * ``y ← LLopt(y, ∇_y φ)`` — the LL optimizer's own rule on the real LL variables;
    * ``v ← v − η_k (∇²_yy φ v − ∇_y F)`` (the na operator's ``multiplier_rule`` is
      ``"gradient"``) or the exact line-search step ``v ← v − ρ r``,
      ``ρ = ||r||²/<r, Hr>`` (``"line-search"``);
    * returns ``∇_x F − ∇²_xy φ v`` (old ``v``) with the UL learning rate ``λ_k``:
      ``Problem`` sets it on every UL param group and takes the UL step
      ``x ← ULopt(x, ·)``.

    Schedules (``s`` = LL lr, ``λ0`` = the UL optimizer's constructor lr, read once):
    aggregated, ``η, λ = (k+1)^{-τ/2} α^a s, (k+1)^{-3τ/2} α^b s`` with ``(a, b) =
    (2, 7), (1, 5), (0, 3)`` for ``strategy`` s1/s2/s3; otherwise (only ``s1``)
    ``λ = λ0 (k+1)^{-τ} s``, ``η = η0 (k+1)^{-τ/2} s``. The strategy is re-read from
    ``self.strategy`` at every call (callers may switch it between iterations) and
    checked there: s1/s2/s3 with an aggregated objective, only s1 without
    (``ConfigError`` at the first step that uses another value).

    Requirements (checked at build time): last gm operator, ``na_op`` exactly one
    operator with a ``multiplier_rule`` (the na chain is not run). ``Problem`` does
    not copy fast weights back. ``lower_iters > 1`` is accepted as JBOAT accepts it,
    with one logged warning: the inner loop takes ``K`` steps on the fast weights and
    every derivative above is taken at ``ỹ = y_K`` — the real ``y`` still takes one
    step ``y ← LLopt(y, ∇_y φ(x, y_K))`` (a ``K``-step look-ahead, extragradient-like),
    and ``v`` and ``x`` use the Hessian and gradients at ``y_K`` (docs/operators.md).

    Options (section ``DM``), defaults chosen so that the defaults are stable
    whenever the LL step itself is:

    * ``eta0 = 1.0``: multiplier steps of the LL step size ``s``;
    * ``tau = 0.0``: constant base schedules (the paper's decaying schedules need
      ``tau > 0``; keep ``3τ/2 + 7/p <= 1`` under s1 so that ``Σ λ_k`` diverges);
    * ``p = 8.0``, ``mu0 = 0.9``: slowly decaying aggregation weight, UL steps not
      summable under every strategy for ``tau = 0``;
    * ``strategy = "s1"``;
    * ``auxiliary_v_lr = 0.01``: initial lr of the multiplier's SGD step; ``η_k``
      replaces it at every call (as in the authors' code), so it does not affect
      results and is kept for configuration compatibility.

    Memory: O(|y| + |x|) (one Hessian-vector product, no trajectory).

    Ref: Liu, Liu, Yao, Zeng, Zhang, "Averaged method of multipliers for bi-level
    optimization without lower-level strong convexity", ICML 2023.
    """

    role = "gm"
    gm_terminal = True
    chain_stage = (1, 1)
    second_order = True
    computes_upper_gradient = True
    keeps_lower_model = True
    #: its own LL and multiplier updates are not averaged across ranks (data_parallel)
    supports_data_parallel = False

    options = (
        Option("auxiliary_v_lr", "float", 0.01, low=0.0, low_open=True,
               doc="initial lr of the multiplier's SGD step (replaced by eta_k at "
                   "every call)"),
        Option("tau", "float", 0.0, low=0.0,
               doc="decay exponent of the step-size schedules"),
        Option("p", "float", 8.0, low=0.0, low_open=True,
               doc="aggregation weight decay alpha_k = mu0 (k+1)^(-1/p) (aggregated objective)"),
        Option("mu0", "float", 0.9, low=0.0, low_open=True,
               doc="initial aggregation weight (aggregated objective)"),
        Option("eta0", "float", 1.0, low=0.0, low_open=True,
               doc="multiplier step factor eta = eta0 (k+1)^(-tau/2) s (plain objective)"),
        Option("strategy", "choice", "s1", choices=tuple(STRATEGIES),
               doc="schedule powers when aggregated: s1, s2 or s3 (only s1 otherwise)"),
    )

    @classmethod
    def check_combination(cls, config):
        na_ops = list(config.get("na_op") or ())
        rules = _with_attribute("na", "multiplier_rule")
        if len(na_ops) != 1 or na_ops[0] not in rules:
            choices = " or ".join(
                f"[{n}] ({Operation_REGISTRY[n].multiplier_rule} step of the multiplier)"
                for n in sorted(rules, key=lambda n: Operation_REGISTRY[n].chain_stage))
            raise ConfigError(f"DM needs na_op to be exactly {choices}, got {na_ops}; DM "
                              f"computes the UL gradient itself and runs no NA chain.")
        if config.get("accumulate_grad"):
            raise ConfigError("DM is a single-loop method on one problem and does not support "
                              "accumulate_grad (it would take one LL and multiplier step per "
                              "task); set accumulate_grad: false.")
        # DM.strategy is checked when it is used (optimize): upstream scripts build
        # with one value and set another on the instance before the first run_iter.

    @staticmethod
    def _check_strategy(strategy, aggregated):
        """Raise ``ConfigError`` unless ``strategy`` is usable (aggregated: s1, s2 or s3;
        without: s1). Called at every DM step, with the value on the instance."""
        if aggregated and strategy not in STRATEGIES:
            raise ConfigError(f"DM.strategy must be one of {', '.join(STRATEGIES)}, got "
                              f"{strategy!r}; set DM: {{strategy: s1}} in the config or "
                              f"gradient_instances[-1].strategy = 's1' on the solver.")
        if not aggregated and strategy != "s1":
            names = ", ".join(_with_attribute("gm", "aggregates_objective"))
            raise ConfigError(f"DM.strategy {strategy!r} only applies with an aggregated "
                              f"objective (gm_op {names}); without it use strategy: s1 (in "
                              f"the config, or gradient_instances[-1].strategy = 's1' "
                              f"before run_iter), or add {names} to gm_op.")

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, solver_config,
                 plan=None, **kwargs):
        super().__init__(ll_objective, ul_objective, ll_model, ul_model, solver_config,
                         plan=plan, **kwargs)
        section = solver_config["DM"]
        self.auxiliary_v_lr = section["auxiliary_v_lr"]
        self.tau = section["tau"]
        self.p = section["p"]
        self.mu0 = section["mu0"]
        self.eta0 = section["eta0"]
        self.strategy = section["strategy"]
        self.objective = plan.objective
        rules = {getattr(Operation_REGISTRY[n], "multiplier_rule", None)
                 for n in solver_config.get("na_op") or ()}
        self.line_search = "line-search" in rules
        self.ll_lr = float(self.ll_opt.lr)
        self.ul_lr0 = float(solver_config["upper_level_opt"].lr)
        index_of = {id(p): i for i, p in enumerate(ll_model.parameters())}
        missing = [i for i, var in enumerate(self.ll_var) if id(var) not in index_of]
        if missing:
            raise ConfigError(f"DM needs every lower_level_var entry to be a parameter of "
                              f"lower_level_model (entries {missing} are not); use "
                              f"list(lower_level_model.parameters()).")
        self._ll_index = [index_of[id(var)] for var in self.ll_var]
        self._view = functional_view(ll_model)
        self.auxiliary_v = [jt.zeros(var.shape, var.dtype) for var in self.ll_var]
        self.schedule = None
        if self.lower_loop > 1:
            logger.warning(
                "jboat: DM with lower_iters: %d runs %s, then DM's joint step at the last "
                "iterate (as JBOAT does); the method's (the paper's) setting is "
                "lower_iters: 1.", self.lower_loop,
                f"{self.lower_loop} inner-loop steps on the fast weights"
                if any(getattr(Operation_REGISTRY[n], "runs_inner_loop", False)
                       for n in solver_config.get("gm_op") or ()) else
                "no extra lower-level steps (gm_op runs no inner loop, so lower_iters has "
                "no effect)")

    @property
    def aggregated(self):
        return self.objective.aggregated

    def state_dict(self):
        """The multiplier ``v`` (persistent across UL iterations)."""
        return {"auxiliary_v": list(self.auxiliary_v)}

    def load_state_dict(self, state):
        values = [value if isinstance(value, jt.Var) else jt.array(np.asarray(value))
                  for value in state["auxiliary_v"]]
        if len(values) != len(self.auxiliary_v) or any(
                tuple(new.shape) != tuple(old.shape)
                for new, old in zip(values, self.auxiliary_v)):
            raise ValueError("The saved DM multiplier does not match lower_level_var "
                             "(count or shapes differ).")
        self.auxiliary_v = [new.detach().cast(old.dtype)
                            for new, old in zip(values, self.auxiliary_v)]

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None,
                 step_losses=None):
        self._check_strategy(self.strategy, self.aggregated)
        schedule = dm_schedule(current_iter, self.ll_lr, self.ul_lr0, self.eta0, self.tau,
                               self.p, self.mu0, self.strategy, self.aggregated)
        self.schedule = schedule

        # ỹ: the starting weights as fresh leaves (partial derivatives at (x, ỹ))
        weights = list(self.ll_model.parameters()) if weights is None else weights
        weights = [w if w.is_stop_grad() else w.detach() for w in weights]
        y = [weights[i] for i in self._ll_index]
        if self.aggregated:
            phi = self.objective.at_alpha(schedule.alpha, ll_feed_dict, ul_feed_dict,
                                          self.ul_model, self._view, params=weights)
        else:
            phi = self.ll_objective(ll_feed_dict, self.ul_model, self._view, params=weights)
        upper_loss = self.ul_objective(ul_feed_dict, self.ul_model, self._view, params=weights)
        if step_losses is not None:
            step_losses.append(phi.detach())
        v = self.auxiliary_v
        d = dm_derivatives(phi, upper_loss, y, self.ul_var, v)
        residual = [(hv - fy).detach() for hv, fy in zip(d.Hv, d.F_y)]
        if self.line_search:
            new_v = multiplier_step(v, residual, hessian_residual=vjp(d.g_y, y, residual))
        else:
            new_v = multiplier_step(v, residual, eta=schedule.eta)

        # every derivative is taken; now the LL step and the multiplier
        clear_custom_grads(self.ll_var)
        update_tensor_grads(self.ll_var, d.g_y)
        apply_custom_grads(self.ll_opt, self.ll_var)
        self.auxiliary_v = new_v
        return HyperGrads(upper_loss.detach(), [fx - jv for fx, jv in zip(d.F_x, d.Jv)],
                          upper_lr=schedule.lam)
