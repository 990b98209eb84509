"""Numerical-approximation (hyper-gradient) operators.

Chain order: ``[PTT, FOA, RGT] -> [IAD, RAD, FD, IGA] -> [CG, NS]`` (pre-operators,
then exactly one terminal choice: RAD, FD, IGA, CG, NS, IAD, IAD+CG or IAD+NS).
"""

from .hyper_gradient import HyperGradient
from .sequential_hg import SequentialHG, makes_functional_na_operation
from .rad import RAD
from .rgt import RGT
from .ptt import PTT
from .foa import FOA
from .fd import FD
from .cg import CG
from .ns import NS
from .iga import IGA
from .iad import IAD

__all__ = ["HyperGradient", "SequentialHG", "makes_functional_na_operation", "RAD", "RGT",
           "PTT", "FOA", "FD", "CG", "NS", "IGA", "IAD"]
