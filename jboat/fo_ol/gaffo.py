"""GAFFO: gap-function-based first-order method."""

from ..errors import ConfigError
from ..utils.op_utils import grads_with_zeros
from ..operation_registry import register_class
from ..options import Option
from ._common import (FirstOrderOperator, OptionalFloat, assign_values, call_projection,
                      snapshot)

__all__ = ["GAFFO", "gap_direction"]


def gap_direction(risk_grad, probe_grad, base_grad, lam):
    """``a = ∇_y F / max(λ, 1e-8) − (p − b)`` with ``b = ∇_y f(x,y)`` and
    ``p = ∇_y f(x, y + σb)``; ``p − b ≈ σ∇²_yy f ∇_y f = ∇_y G_σ`` where
    ``G_σ = (σ/2)||∇_y f||²`` is the regularised gap function of the LL problem
    (no constraints), so ``a ≈ ∇_y (F/λ − G_σ)``."""
    scale = 1.0 / max(lam, 1e-8)
    return [r * scale - (p - b) for r, p, b in zip(risk_grad, probe_grad, base_grad)]


def _sign(values):
    """Element-wise sign (−1, 0, 1) in the dtype of ``values``."""
    return (values > 0).cast(values.dtype) - (values < 0).cast(values.dtype)


@register_class
class GAFFO(FirstOrderOperator):
    """Regularised-gap-function first-order method, for problems whose UL and LL
    variables have the same structure (``ul_var[i]`` and ``ll_var[i]`` share a shape,
    e.g. meta-learning with ``upper_level_model is lower_level_model``).

    One call (``s_l = lower_step_size``, default the LL optimizer's ``lr``;
    ``Proj`` = ``projection`` or the identity):

    1. if ``sync_lower_from_upper``: ``y ← Proj(x)`` (values);
    2. ``g = ∇_y f(x,y)``; ``y ← Proj(y − s_l·(sign(g) if use_sign_lower_step else g))``
       (a direct update of the real LL variables, not the LL optimizer);
    3. ``b = ∇_y f(x,y)``; probe ``p = ∇_y f(x, Proj(y + σb))`` (``y`` itself is not
       moved; the probe is evaluated on a snapshot);
    4. ``r = ∇_y F(x,y)``; ``a = r/max(λ, 1e-8) − (p − b)``;
    5. adds ``a`` (``maximize: false``, our default) or ``−a`` (``maximize: true``) to
       the UL buffers, entry ``i`` of ``a`` to ``ul_var[i]``. Returns ``F(x,y)``.

    Sign analysis. ``p − b ≈ σ∇²f·∇f = ∇_y G_σ`` with ``G_σ = (σ/2)||∇_y f||²``, so
    ``a ≈ ∇_y(F/λ − G_σ)``; after step 1 ``y`` moves with ``x`` (``∂y/∂x ≈ I`` for
    small ``s_l``), so ``a`` acts as an x-gradient of ``F/λ − G_σ``. A descent UL
    optimizer (SGD, Adam) steps along ``−`` its buffer:

    * ``maximize: false`` (default here): ``x ← x − lr·a`` *decreases* ``F`` (the
      UL objective) — and increases the gap term;
    * ``maximize: true`` (torch upstream's code default; its code calls ``a`` the
      "ascent direction"): ``x ← x + lr·a`` increases ``F`` and decreases the gap, the
      adversarial set-up of maximising a risk ``F`` near LL stationarity.

    Neither sign descends ``F/λ + G_σ``; the formula is kept as specified. The UL
    gradient uses only ``∇_y F`` (``∇_x F`` is ignored), so on problems where ``F``
    depends on ``x`` directly the fixed point differs from the bilevel solution.

    Memory: O(|y|) (one snapshot). Cost per call: three LL-loss gradients and one
    UL-loss gradient.

    Ref: Yao, Yin, Zeng, Zhang, "Overcoming lower-level constraints in bilevel
    optimization: a novel approach with regularized gap functions", arXiv:2406.01992.
    """

    role = "fo"
    options = (
        Option("lambda", "float", 1.0, low=0.0, low_open=True, aliases=("gap_lambda",),
               doc="λ: the UL term enters as ∇_y F / λ"),
        Option("sigma", "float", 0.01, low=0.0, doc="σ: probe distance along ∇_y f"),
        OptionalFloat("lower_step_size", None, low=0.0,
                      doc="s_l of the LL step (null: the LL optimizer's lr)"),
        Option("use_sign_lower_step", "bool", False, doc="step along sign(∇_y f)"),
        Option("maximize", "bool", False,
               doc="false: the UL buffer gets a (descent lowers F); true: −a (upstream)"),
        Option("sync_lower_from_upper", "bool", True,
               doc="copy the UL values into the LL variables at the start of each call"),
        Option("projection", "callable", None,
               doc="callable(list of LL Vars) -> projected list (or None: in place)"),
    )

    @classmethod
    def check_combination(cls, config):
        super().check_combination(config)
        ll_var, ul_var = config.get("lower_level_var"), config.get("upper_level_var")
        if ll_var is None or ul_var is None:
            return
        if len(ll_var) != len(ul_var):
            raise ConfigError(
                f"GAFFO adds a lower-level-shaped direction to the upper-level variables "
                f"entry by entry, so lower_level_var and upper_level_var must have the same "
                f"length; got {len(ll_var)} and {len(ul_var)}. Use matching lists (e.g. the "
                f"same model for both levels) or another fo_op.")
        for i, (y, x) in enumerate(zip(ll_var, ul_var)):
            if tuple(y.shape) != tuple(x.shape):
                raise ConfigError(
                    f"GAFFO needs lower_level_var[{i}] and upper_level_var[{i}] to have the "
                    f"same shape; got {tuple(y.shape)} and {tuple(x.shape)}. Order both "
                    f"lists the same way (or use another fo_op).")

    def _lower_step_size(self):
        size = self.settings["lower_step_size"]
        return float(self.ll_opt.lr) if size is None else size

    def _project_real(self):
        projection = self.settings["projection"]
        if projection is not None:
            assign_values(self.ll_var, call_projection(projection, self.ll_var))

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        s = self.settings
        projection = s["projection"]
        if s["sync_lower_from_upper"]:
            assign_values(self.ll_var, self.ul_var)
            self._project_real()

        grads = grads_with_zeros(self.lower_loss(ll_feed_dict), self.ll_var)
        step = self._lower_step_size()
        steps = [_sign(g) if s["use_sign_lower_step"] else g for g in grads]
        assign_values(self.ll_var, [v - g * step for v, g in zip(self.ll_var, steps)])
        self._project_real()

        base = grads_with_zeros(self.lower_loss(ll_feed_dict), self.ll_var)
        probe_point = call_projection(
            projection, [(v + b * s["sigma"]).detach() for v, b in zip(self.ll_var, base)])
        probe_point = snapshot(probe_point)
        probe = grads_with_zeros(self.lower_loss(ll_feed_dict, probe_point), probe_point)

        upper = self.upper_loss(ul_feed_dict)
        risk = grads_with_zeros(upper, self.ll_var)
        direction = gap_direction(risk, probe, base, s["lambda"])
        if s["maximize"]:
            direction = [-d for d in direction]
        return self.result(upper, direction)
