"""What every registered operator declares about itself."""

__all__ = ["OperatorSpec"]


class OperatorSpec:
    """Class-level declarations read by the registry and the config validator.

    Attributes:
        role: ``"gm"``, ``"na"``, ``"fo"`` (None for base classes).
        options: tuple of :class:`jboat.options.Option` of the operator's section.
        config_section: name of that section (defaults to ``shared_section``, a
            section several classes share, else to the class name).
        tracks_trajectory: the operator needs the differentiable LL history.
        supports_data_parallel: the operator gives the full-data result under
            ``data_parallel`` (FO operators never do; see ``jboat.distributed``).
        chain_stage: ``(group, rank)``: the execution order inside a chain (groups
            run first to last, ranks inside a group left to right).
        effect_on_trajectory: for operators that only act on the recorded
            trajectory, what they do (logged as "has no effect" when nothing records it).
        second_order: the operator differentiates gradients of the user's losses
            (Hessian-vector products, mixed derivatives); :class:`jboat.Problem` then
            runs the models' layers with twice-differentiable implementations
            (:func:`jboat.higher_jit.second_order.second_order_layers`), as it does
            when a recorded trajectory is differentiated with second-order terms.
    """

    role = None
    options = ()
    config_section = None
    tracks_trajectory = False
    supports_data_parallel = True
    chain_stage = (1, 100)
    effect_on_trajectory = None
    second_order = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "config_section" not in cls.__dict__:
            cls.config_section = getattr(cls, "shared_section", None) or cls.__name__

    @classmethod
    def configure_plan(cls, plan, config):
        """Adjust the :class:`jboat.plan.InnerLoopPlan` for this operator (default: no
        change). ``config`` is the normalised solver config."""

    @classmethod
    def needs_second_order(cls, config):
        """Whether, with this (normalised) config, the operator takes derivatives of
        derivatives of the user's losses (besides differentiating a recorded
        trajectory, which the plan accounts for)."""
        return cls.second_order

    @classmethod
    def check_combination(cls, config):
        """Raise ``ConfigError`` if this operator cannot run with ``config``."""

    def state_dict(self):
        """State that must survive across ``run_iter`` calls (Vars, numbers, lists,
        dicts). Stateless operators return ``{}``."""
        return {}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (Vars or numpy arrays)."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but got {sorted(state)}.")


class SingleLoopSolver(OperatorSpec):
    """Protocol of solvers that update the LL variables themselves, one call per task
    and upper iteration, with no inner loop to differentiate.

    :meth:`optimize` takes the solver's own LL step(s) on the real LL variables and
    returns :class:`jboat.plan.HyperGrads` (the UL gradient); ``Problem`` writes it
    into the UL buffers and takes the UL step.

    Args:
        ll_objective, ul_objective: ``f`` and ``F`` (``(feed, upper_model,
            lower_model, **kw) -> scalar Var``).
        ll_model, ul_model: the LL/UL ``jittor.Module``.
        solver_config: the normalised solver config.
        lower_loop: ``K`` (``lower_iters``).
        ll_var, ul_var: the LL/UL variables (default: the config's).
        plan: the solver's :class:`jboat.plan.InnerLoopPlan` (None for ``fo_op``).
    """

    def __init__(self, ll_objective, ul_objective, ll_model, ul_model, solver_config,
                 lower_loop=None, ll_var=None, ul_var=None, plan=None, **kwargs):
        self.ll_objective = ll_objective
        self.ul_objective = ul_objective
        self.ll_model = ll_model
        self.ul_model = ul_model
        self.solver_config = solver_config
        self.lower_loop = lower_loop
        self.ll_var = list(solver_config["lower_level_var"] if ll_var is None else ll_var)
        self.ul_var = list(solver_config["upper_level_var"] if ul_var is None else ul_var)
        self.ll_opt = solver_config["lower_level_opt"]
        self.plan = plan

    def optimize(self, ll_feed_dict, ul_feed_dict, current_iter, weights=None, step_losses=None):
        """One step; ``weights``: the LL model's fast weights to start from (None: the
        real LL variables); ``step_losses``: a list the LL step objectives may be
        appended to (detached) for the NaN guard. Returns :class:`jboat.plan.HyperGrads`."""
        raise NotImplementedError("Single-loop solvers implement optimize().")
