"""The na chain: pre-operators (plan only), then one terminal choice."""

from ..chain import OperatorChain, build_chain
from ..operation_registry import HyperGradientRules, validate_and_adjust_order

__all__ = ["SequentialHG", "makes_functional_na_operation", "validate_and_adjust_order"]


class SequentialHG(OperatorChain):
    """na operators in execution order (``ordered_instances``, ``custom_order``)."""

    def hypergradient(self, trajectory, ll_feed_dict, ul_feed_dict):
        """:class:`jboat.plan.HyperGrads` of the last terminal operator, which
        differentiates w.r.t. the targets a retargeting operator before it hands on."""
        *before, last = [op for op in self.gradient_instances if op.na_stage != "pre"]
        wrt = None
        for op in before:
            wrt = op.targets(trajectory)
        return last.hypergradient(trajectory, ll_feed_dict, ul_feed_dict, wrt=wrt)


def makes_functional_na_operation(custom_order, **kwargs):
    """Instantiate the na operators of ``custom_order`` in execution order."""
    return build_chain(SequentialHG, custom_order, HyperGradientRules.get_gradient_order(),
                       **kwargs)
