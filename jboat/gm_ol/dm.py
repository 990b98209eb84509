"""DM: dual multiplier, the single-loop averaged method of multipliers (sl-BAMM)."""

import collections

import jittor as jt
import numpy as np

from ..errors import ConfigError
from ..higher_jit.utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ..utils.objectives import StepObjective
from ..utils.op_utils import (apply_custom_grads, clear_custom_grads, list_tensor_matmul,
                              update_tensor_grads, vjp)
from .dynamical_system import DynamicalSystem

__all__ = ["DM", "DMSchedule", "DMDerivatives", "dm_schedule", "dm_derivatives",
           "multiplier_step", "STRATEGIES"]

#: strategy -> (power of α in η, power of α in λ), used when GDA aggregates
STRATEGIES = {"s1": (2, 7), "s2": (1, 5), "s3": (0, 3)}

#: keeps the line-search denominator of the CG multiplier step away from zero
CG_EPSILON = 1e-12

DMSchedule = collections.namedtuple("DMSchedule", "alpha eta lam")
DMSchedule.__doc__ = """Step sizes of one DM call: aggregation weight ``alpha`` (None
without GDA), multiplier step ``eta`` and UL learning rate ``lam``."""

DMDerivatives = collections.namedtuple("DMDerivatives", "g_y F_y F_x Hv Jv")
DMDerivatives.__doc__ = """Derivatives at ``(x, y)``: ``g_y = ∇_y φ``, ``F_y = ∇_y F``,
``F_x = ∇_x F``, ``Hv = ∇²_yy φ · v``, ``Jv = ∇²_xy φ · v`` (lists of Vars; ``g_y`` keeps
its graph so that further Hessian-vector products can be taken)."""


def dm_schedule(k, s, lam0, eta0, tau, p, mu0, strategy, aggregated):
    """Step sizes of UL iteration ``k`` (0-based), operators.md §1.4 step 1.

    With aggregation (GDA): ``α = μ0 (k+1)^{-1/p}``, ``η = (k+1)^{-τ/2} α^a s`` and
    ``λ = (k+1)^{-3τ/2} α^b s`` with ``(a, b) = (2, 7), (1, 5), (0, 3)`` for strategy
    ``s1, s2, s3``. Without: ``λ = λ0 (k+1)^{-τ} s`` and ``η = η0 (k+1)^{-τ/2} s``.

    Args:
        k: UL iteration counter.
        s: LL learning rate; lam0: the UL optimizer's constructor learning rate.
        tau, p, mu0, eta0, strategy: the DM options.
        aggregated: whether GDA is in ``gm_op``.

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
    quadratic along ``−r`` (steepest descent, the CG variant of DM). Inner products
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


@register_class
class DM(DynamicalSystem):
    """Dual multiplier: one joint step of the LL variables, a multiplier ``v`` and
    the UL variables per UL iteration (single-loop bi-level averaged method of
    multipliers).

    With ``k = current_iter``, ``ỹ`` the latest fast weights (``y_0`` when DM runs
    alone, NGD's look-ahead ``y_1`` after ``[NGD, DM]``) taken as a fresh leaf, and
    ``φ`` = ``gda_loss`` at ``α_k = μ0 (k+1)^{-1/p}`` (GDA present) or ``f``, all
    derivatives at ``(x, ỹ)`` (partial derivatives):

    * ``y ← LLopt(y, ∇_y φ)`` — the LL optimizer's own rule on the real LL variables;
    * ``v ← v − η_k (∇²_yy φ v − ∇_y F)`` (``na_op: [RAD]``) or the exact line-search
      step ``v ← v − ρ r``, ``ρ = ||r||²/<r, Hr>`` (``na_op: [CG]``);
    * ``∇_x F − ∇²_xy φ v`` (old ``v``) is added to the UL buffers, and every UL
      param-group lr is set to ``λ_k``, so ``Problem``'s UL step is
      ``x ← ULopt(x, ·)`` with lr ``λ_k``.

    Schedules (``s`` = LL lr, ``λ0`` = the UL optimizer's constructor lr, read once):
    with GDA ``η, λ = (k+1)^{-τ/2} α^a s, (k+1)^{-3τ/2} α^b s`` with ``(a, b) =
    (2, 7), (1, 5), (0, 3)`` for ``strategy`` s1/s2/s3; without GDA (only ``s1``)
    ``λ = λ0 (k+1)^{-τ} s``, ``η = η0 (k+1)^{-τ/2} s``. The strategy is re-read from
    ``self.strategy`` at every call (callers may switch it between iterations).

    Requirements (checked at build time): last GM operator, ``na_op`` exactly
    ``[RAD]`` or ``[CG]`` (selects the multiplier update; the NA chain is not run),
    ``lower_iters == 1``, no DI. ``Problem`` does not copy fast weights back.

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

    gm_terminal = True
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
               doc="aggregation weight decay alpha_k = mu0 (k+1)^(-1/p) (with GDA)"),
        Option("mu0", "float", 0.9, low=0.0, low_open=True,
               doc="initial aggregation weight (with GDA)"),
        Option("eta0", "float", 1.0, low=0.0, low_open=True,
               doc="multiplier step factor eta = eta0 (k+1)^(-tau/2) s (without GDA)"),
        Option("strategy", "choice", "s1", choices=tuple(STRATEGIES),
               doc="schedule powers with GDA: s1, s2 or s3 (only s1 without GDA)"),
    )

    @classmethod
    def check_combination(cls, config):
        na_ops = list(config.get("na_op") or ())
        if na_ops not in (["RAD"], ["CG"]):
            raise ConfigError(f"DM needs na_op to be exactly [RAD] (gradient step of the "
                              f"multiplier) or [CG] (line-search step), got {na_ops}; DM "
                              f"computes the UL gradient itself and runs no NA chain.")
        if config.get("lower_iters") != 1:
            raise ConfigError(f"DM is a single-loop method: set lower_iters: 1 (got "
                              f"{config.get('lower_iters')}).")
        if config.get("accumulate_grad"):
            raise ConfigError("DM is a single-loop method on one problem and does not support "
                              "accumulate_grad (it would take one LL and multiplier step per "
                              "task); set accumulate_grad: false.")
        gm_ops = config.get("gm_op") or ()
        if "DI" in gm_ops:
            raise ConfigError("DI cannot be combined with DM: DM computes its own UL "
                              "gradient and produces no initialisation gradient. Remove DI.")
        strategy = (config.get("DM") or {}).get("strategy", "s1")
        cls._check_strategy(strategy, "GDA" in gm_ops)

    @staticmethod
    def _check_strategy(strategy, aggregated):
        if aggregated and strategy not in STRATEGIES:
            raise ConfigError(f"DM.strategy must be one of {', '.join(STRATEGIES)}, got "
                              f"{strategy!r}.")
        if not aggregated and strategy != "s1":
            raise ConfigError(f"DM.strategy {strategy!r} only applies with GDA in gm_op; "
                              f"without GDA use strategy: s1 (or add GDA).")

    def __init__(self, ll_objective, lower_loop, ul_model, ul_objective, ll_model,
                 solver_config, **kwargs):
        super().__init__(ll_objective, ul_objective, lower_loop, ul_model, ll_model,
                         solver_config)
        section = solver_config["DM"]
        self.auxiliary_v_lr = section["auxiliary_v_lr"]
        self.tau = section["tau"]
        self.p = section["p"]
        self.mu0 = section["mu0"]
        self.eta0 = section["eta0"]
        self.strategy = section["strategy"]
        self.objective = StepObjective.from_config(ll_objective, solver_config)
        self.line_search = list(solver_config.get("na_op") or ()) == ["CG"]
        self.ll_var = list(solver_config["lower_level_var"])
        self.ul_var = list(solver_config["upper_level_var"])
        self.ll_opt = solver_config["lower_level_opt"]
        self.ul_opt = solver_config["upper_level_opt"]
        self.ll_lr = float(self.ll_opt.lr)
        self.ul_lr0 = float(self.ul_opt.lr)
        index_of = {id(p): i for i, p in enumerate(ll_model.parameters())}
        missing = [i for i, var in enumerate(self.ll_var) if id(var) not in index_of]
        if missing:
            raise ConfigError(f"DM needs every lower_level_var entry to be a parameter of "
                              f"lower_level_model (entries {missing} are not); use "
                              f"list(lower_level_model.parameters()).")
        self._ll_index = [index_of[id(var)] for var in self.ll_var]
        self.auxiliary_v = [jt.zeros(var.shape, var.dtype) for var in self.ll_var]
        self.v_lr = self.auxiliary_v_lr
        self.schedule = None

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

    def optimize(self, ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
                 current_iter, next_operation=None, **kwargs):
        if next_operation is not None:
            raise ConfigError(f"DM must be the last operator of gm_op (it is followed by "
                              f"{next_operation}); restore the default gradient order.")
        self._check_strategy(self.strategy, self.aggregated)
        schedule = dm_schedule(current_iter, self.ll_lr, self.ul_lr0, self.eta0, self.tau,
                               self.p, self.mu0, self.strategy, self.aggregated)
        self.schedule = schedule

        # ỹ: the latest fast weights as fresh leaves (partial derivatives at (x, ỹ))
        weights = [w if w.is_stop_grad() else w.detach() for w in auxiliary_model.parameters()]
        y = [weights[i] for i in self._ll_index]
        if self.aggregated:
            phi = self.objective.at_alpha(schedule.alpha, ll_feed_dict, ul_feed_dict,
                                          self.ul_model, auxiliary_model, params=weights)
        else:
            phi = self.ll_objective(ll_feed_dict, self.ul_model, auxiliary_model,
                                    params=weights)
        upper_loss = self.ul_objective(ul_feed_dict, self.ul_model, auxiliary_model,
                                       params=weights)
        if kwargs.get("step_losses") is not None:
            kwargs["step_losses"].append(phi.detach())
        if kwargs.get("upper_losses") is not None:
            kwargs["upper_losses"].append(upper_loss.detach())
        v = self.auxiliary_v
        d = dm_derivatives(phi, upper_loss, y, self.ul_var, v)
        residual = [(hv - fy).detach() for hv, fy in zip(d.Hv, d.F_y)]
        if self.line_search:
            new_v = multiplier_step(v, residual, hessian_residual=vjp(d.g_y, y, residual))
        else:
            self.v_lr = schedule.eta
            new_v = multiplier_step(v, residual, eta=schedule.eta)

        # every derivative is taken; now write: LL step, multiplier, UL gradient + lr
        clear_custom_grads(self.ll_var)
        update_tensor_grads(self.ll_var, d.g_y)
        apply_custom_grads(self.ll_opt, self.ll_var)
        self.auxiliary_v = new_v
        update_tensor_grads(self.ul_var, [fx - jv for fx, jv in zip(d.F_x, d.Jv)])
        for group in self.ul_opt.param_groups:
            group["lr"] = schedule.lam
        return -1
