"""A chain of operators in execution order."""

from .operation_registry import get_registered_operation, validate_and_adjust_order

__all__ = ["OperatorChain", "build_chain"]


class OperatorChain:
    """Operators in execution order; ``gradient_instances`` holds the instances and
    ``custom_order`` their names."""

    def __init__(self, ordered_instances, custom_order):
        self.gradient_instances = list(ordered_instances)
        self.custom_order = list(custom_order)


def build_chain(chain_type, custom_order, gradient_order, **kwargs):
    """Instantiate the operators of ``custom_order`` in execution order."""
    for name in custom_order:
        get_registered_operation(name)
    ordered = validate_and_adjust_order(custom_order, gradient_order)
    instances = [get_registered_operation(name)(**kwargs) for name in ordered]
    return chain_type(instances, ordered)
