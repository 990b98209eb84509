"""Shared helpers: maths on lists of Vars, gradient buffers, order rules."""

from .op_utils import *  # noqa: F401,F403
from .op_utils import __all__  # noqa: F401
