"""What every registered operator declares about itself."""

__all__ = ["OperatorSpec"]


class OperatorSpec:
    """Class-level declarations read by the registry and the config validator.

    Attributes:
        role: ``"gm"``, ``"na"``, ``"fo"`` (None for base classes).
        options: tuple of :class:`jboat.options.Option` of the operator's section.
        config_section: name of that section (defaults to the class name).
        tracks_trajectory: the operator needs the differentiable LL history.
        supports_data_parallel: the operator gives the full-data result under
            ``data_parallel`` (FO operators never do; see ``jboat.distributed``).
        second_order: the operator differentiates gradients of the user's losses
            (Hessian-vector products, mixed derivatives). With it, or with
            ``tracks_trajectory``, :class:`jboat.Problem` runs the models' layers
            with twice-differentiable implementations
            (:func:`jboat.higher_jit.second_order.second_order_layers`).
        stops_step_gradients: the operator makes the LL steps' gradients constants
            (FOA), so differentiating the trajectory needs first derivatives only.
    """

    role = None
    options = ()
    config_section = None
    tracks_trajectory = False
    supports_data_parallel = True
    second_order = False
    stops_step_gradients = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "config_section" not in cls.__dict__:
            cls.config_section = cls.__name__

    @classmethod
    def needs_second_order(cls, config):
        """Whether, with this (normalised) config, the operator takes derivatives of
        derivatives of the user's losses."""
        if cls.second_order:
            return True
        return cls.tracks_trajectory and not _step_gradients_stopped(config)

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


def _step_gradients_stopped(config):
    from .operation_registry import get_registered_operation

    names = list(config.get("gm_op") or ()) + list(config.get("na_op") or ())
    return any(get_registered_operation(n).stops_step_gradients for n in names)
