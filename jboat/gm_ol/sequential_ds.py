"""Chaining of GM operators: ``[GDA, DI] -> [NGD, DM]``."""

from ..chain import OperatorChain, build_chain
from ..operation_registry import DynamicalSystemRules, validate_and_adjust_order

__all__ = ["SequentialDS", "makes_functional_dynamical_system", "validate_and_adjust_order"]


class SequentialDS(OperatorChain):
    """GM operators in execution order (``ordered_instances``, ``custom_order``)."""

    method = "optimize"

    def result_key(self, last_index):
        return f"dynamic_results_{last_index}"

    def optimize(self, **kwargs):
        """Run the chain; returns ``[{"dynamic_results_<i>": result_of_last}]``."""
        return self._run(kwargs)


def makes_functional_dynamical_system(custom_order, **kwargs):
    """Instantiate the GM operators of ``custom_order`` in execution order."""
    return build_chain(SequentialDS, custom_order, DynamicalSystemRules.get_gradient_order(),
                       **kwargs)
