"""PGDO: penalty-based bilevel gradient descent."""

from ..utils.op_utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ._common import FirstOrderOperator, snapshot, squared_norm, state_vars

__all__ = ["PGDO", "penalty_schedule"]


def penalty_schedule(gamma, gamma_init, gamma_max, gamma_argmax_step):
    """``(ω, Δγ, γ_max)`` for the current ``γ``.

    ``γ_max`` is raised to ``gamma_init`` if it is smaller; ``Δγ = (γ_max −
    gamma_init)/gamma_argmax_step`` (linear ramp); ``ω = min(1/(γ + 1e-8), 1)``
    normalises the penalised objective so its scale stays O(1) as ``γ`` grows.
    """
    gamma_max = max(gamma_max, gamma_init)
    delta = (gamma_max - gamma_init) / gamma_argmax_step
    omega = min(1.0 / (gamma + 1e-8), 1.0)
    return omega, delta, gamma_max


@register_class
class PGDO(FirstOrderOperator):
    """Penalty-based gradient descent on ``F(x,y) + γ·p(x,y)``.

    State (persistent across calls and tasks): ``ŷ``, a snapshot of the LL variables
    taken at construction and warm-started from call to call, and ``γ`` (starts at
    ``gamma_init``, grows by ``Δγ = (gamma_max − gamma_init)/gamma_argmax_step`` per
    call up to ``gamma_max``). One call (``ω = min(1/(γ+1e-8), 1)`` with the current
    ``γ``):

    1. if ``update_y_ahead``: ``K`` LL-optimizer steps of ``y`` on ``f(x,y)``;
    2. ``K`` plain-SGD steps (lr ``y_hat_lr``) of ``ŷ`` on ``f(x,ŷ)``;
    3. penalised objective, ``penalty``:

       * ``"difference"``: ``L = ω(F(x,y) + γ(f(x,y) − f(x,ŷ)))`` — ``ŷ`` held fixed,
         the ``x``-dependence of ``f(x,ŷ)`` kept (value-function penalty);
       * ``"gradient"``: ``L = ω(F(x,y) + γ||∇_y f(x,y)||²)`` with the inner gradient
         built differentiably, so ``∇L`` contains ``2ωγ ∇²f·∇_y f`` (second order);
    4. one LL-optimizer step along ``∇_y L``; ``∇_x L`` goes to the UL buffers;
    5. ``γ ← min(γ + Δγ, gamma_max)``. Returns ``F(x,y)`` (before the LL step).

    For a bounded ``γ`` the method converges to a stationary point of the penalised
    problem ``min_{x,y} F + γ_max·p``, whose distance to the bilevel solution is
    ``O(1/γ_max)`` (Shen & Chen). ``update_y_ahead`` is also accepted under its
    misspelt Jittor-upstream name ``updata_y_ahead``.

    Memory: O(|y|) (``ŷ``; the gradient penalty also keeps one Hessian-vector graph).
    Cost per call: ``K`` (``2K`` with ``update_y_ahead``) + 2 LL-loss gradients.

    Ref: Shen, Chen, "On penalty-based bilevel gradient descent method", ICML 2023.
    """

    role = "fo"
    options = (
        Option("y_hat_lr", "float", 0.1, low=0.0, low_open=True,
               doc="plain-SGD step size of the value-function estimate ŷ"),
        Option("gamma_init", "float", 0.0, low=0.0, doc="initial penalty weight γ"),
        Option("gamma_max", "float", 15.0, low=0.0, doc="largest penalty weight"),
        Option("gamma_argmax_step", "int", 100, low=1,
               doc="number of calls over which γ ramps linearly to gamma_max"),
        Option("update_y_ahead", "bool", False, aliases=("updata_y_ahead",),
               doc="take K LL-optimizer steps on f before the penalised step"),
        Option("penalty", "choice", "difference", choices=("difference", "gradient"),
               doc="value-function gap f(x,y) − f(x,ŷ), or ||∇_y f(x,y)||²"),
    )

    @classmethod
    def needs_second_order(cls, config):
        return cls._settings(config)["penalty"] == "gradient"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.y_hat = snapshot(self.ll_var)
        self.gamma = float(self.settings["gamma_init"])

    def state_dict(self):
        return {"y_hat": list(self.y_hat), "gamma": self.gamma}

    def load_state_dict(self, state):
        self.y_hat = state_vars(state["y_hat"])
        self.gamma = float(state["gamma"])

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        s = self.settings
        omega, delta, gamma_max = penalty_schedule(self.gamma, s["gamma_init"], s["gamma_max"],
                                                   s["gamma_argmax_step"])
        if s["update_y_ahead"]:
            for _ in range(self.lower_loop):
                self.lower_step(grads_with_zeros(self.lower_loss(ll_feed_dict), self.ll_var))
        self.y_hat = self.descend_snapshot(ll_feed_dict, self.y_hat, s["y_hat_lr"],
                                           self.lower_loop)

        upper = self.upper_loss(ul_feed_dict)
        lower = self.lower_loss(ll_feed_dict)
        if s["penalty"] == "difference":
            penalty = lower - self.lower_loss(ll_feed_dict, self.y_hat)
        else:
            penalty = squared_norm(grads_with_zeros(lower, self.ll_var))
        objective = (upper + penalty * self.gamma) * omega
        grads = grads_with_zeros(objective, self.ll_var + self.ul_var)
        n = len(self.ll_var)
        self.lower_step(grads[:n])
        self.gamma = min(self.gamma + delta, gamma_max)
        return self.result(upper, grads[n:])
