"""Running a chain of operators, each fed the dict its predecessor returned."""

from .operation_registry import get_registered_operation, validate_and_adjust_order
from .utils.op_utils import ResultStore

__all__ = ["OperatorChain", "build_chain"]


class OperatorChain:
    """Operators in execution order; subclasses name the method and result key.

    Each operator is called with the previous operator's returned dict (the first
    with the caller's keywords) plus ``next_operation`` (the following name, or
    None for the last). Only the last result is stored.
    """

    method = None

    def __init__(self, ordered_instances, custom_order):
        self.gradient_instances = list(ordered_instances)
        self.custom_order = list(custom_order)
        self.result_store = ResultStore()

    def result_key(self, last_index):
        raise NotImplementedError

    def _run(self, kwargs):
        self.result_store.clear()
        result = kwargs
        last = len(self.gradient_instances) - 1
        for idx, operator in enumerate(self.gradient_instances):
            next_name = self.custom_order[idx + 1] if idx < last else None
            result = getattr(operator, self.method)(**result, next_operation=next_name)
        self.result_store.add(self.result_key(last), result)
        return self.result_store.get_results()


def build_chain(chain_type, custom_order, gradient_order, **kwargs):
    """Instantiate the operators of ``custom_order`` in execution order."""
    for name in custom_order:
        get_registered_operation(name)
    ordered = validate_and_adjust_order(custom_order, gradient_order)
    instances = [get_registered_operation(name)(**kwargs) for name in ordered]
    return chain_type(instances, ordered)
