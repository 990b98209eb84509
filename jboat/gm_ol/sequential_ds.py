"""The gm chain: operators that configure the plan, then the LL loop runner(s)."""

from ..chain import OperatorChain, build_chain
from ..operation_registry import DynamicalSystemRules, validate_and_adjust_order

__all__ = ["SequentialDS", "makes_functional_dynamical_system", "validate_and_adjust_order"]


class SequentialDS(OperatorChain):
    """gm operators in execution order (``ordered_instances``, ``custom_order``)."""

    def run(self, ll_feed_dict, ul_feed_dict, auxiliary_model, auxiliary_opt,
            step_losses=None):
        """Run the inner loop of the operator that runs it; its
        :class:`jboat.plan.Trajectory`, or None when no selected operator runs one."""
        trajectory = None
        for op in self.gradient_instances:
            if getattr(op, "runs_inner_loop", False):
                trajectory = op.run(ll_feed_dict, ul_feed_dict, auxiliary_model,
                                    auxiliary_opt, step_losses=step_losses)
        return trajectory


def makes_functional_dynamical_system(custom_order, **kwargs):
    """Instantiate the gm operators of ``custom_order`` in execution order."""
    return build_chain(SequentialDS, custom_order, DynamicalSystemRules.get_gradient_order(),
                       **kwargs)
