"""Gradient-mapping (lower-level dynamics) operators."""

from .dynamical_system import DynamicalSystem
from .sequential_ds import SequentialDS, makes_functional_dynamical_system
from .ngd import NGD
from .gda import GDA
from .di import DI
from .dm import DM

__all__ = ["DynamicalSystem", "SequentialDS", "makes_functional_dynamical_system",
           "NGD", "GDA", "DI", "DM"]
