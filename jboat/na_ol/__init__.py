"""Numerical-approximation (hyper-gradient) operators."""

from .hyper_gradient import HyperGradient
from .sequential_hg import SequentialHG, makes_functional_na_operation
from .rad import RAD

__all__ = ["HyperGradient", "SequentialHG", "makes_functional_na_operation", "RAD"]
