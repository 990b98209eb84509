"""First-order operators (no Hessians, no trajectory): ``fo_op`` choices.

Each operator performs its own lower-level update(s) on the real LL variables with
the LL optimizer's rule and adds the UL gradient to the UL buffers; ``Problem``
takes the UL step.
"""

from ._common import FirstOrderOperator
from .vso import VSO
from .vfo import VFO
from .meso import MESO
from .pgdo import PGDO
from .alto import ALTO
from .gaffo import GAFFO

__all__ = ["FirstOrderOperator", "VSO", "VFO", "MESO", "PGDO", "ALTO", "GAFFO"]
