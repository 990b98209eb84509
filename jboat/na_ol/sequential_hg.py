"""Chaining of NA operators: ``[PTT, FOA, RGT] -> [IAD, RAD, FD, IGA] -> [CG, NS]``."""

from ..chain import OperatorChain, build_chain
from ..operation_registry import HyperGradientRules, validate_and_adjust_order

__all__ = ["SequentialHG", "makes_functional_na_operation", "validate_and_adjust_order"]


class SequentialHG(OperatorChain):
    """NA operators in execution order (``ordered_instances``, ``custom_order``)."""

    method = "compute_gradients"

    def result_key(self, last_index):
        return "gradient_operator_results"

    def compute_gradients(self, **kwargs):
        """Run the chain; returns ``[{"gradient_operator_results": result_of_last}]``."""
        return self._run(kwargs)


def makes_functional_na_operation(custom_order, **kwargs):
    """Instantiate the NA operators of ``custom_order`` in execution order."""
    return build_chain(SequentialHG, custom_order, HyperGradientRules.get_gradient_order(),
                       **kwargs)
