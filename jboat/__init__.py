"""jboat: gradient-based bilevel optimization on Jittor.

Importing jboat first applies safe Jittor environment defaults (see
``jboat._env``): ``nvcc_path=""`` when no CUDA driver is present and ``use_mkl=0``
when no local oneDNN is available. Values already set by the user are kept.
"""

import logging

from ._env import configure_jittor_environment
from .distributed import install_process_hooks
from ._kernel_pch import install_kernel_pch

install_process_hooks()  # under mpirun only: rank-0 logging, a failing rank stops the job
configure_jittor_environment()

from . import distributed, higher_jit, utils, gm_ol, na_ol, fo_ol  # noqa: E402
from .boat_opt import Problem  # noqa: E402
from .check import HypergradientCheck, check_hypergradient  # noqa: E402
from .config import list_recipes, load_config, normalize_config  # noqa: E402
from .errors import (ConfigError, ConfigTypeError, MissingConfigKeyError,  # noqa: E402
                     UnknownOperatorError)
from .operation_registry import (Operation_REGISTRY, get_registered_operation,  # noqa: E402
                                 operators_by_role, register_class)

logging.getLogger("jboat").addHandler(logging.NullHandler())
install_kernel_pch()  # CPU kernels compile ~2.5x faster (jboat/_kernel_pch.py; JBOAT_KERNEL_PCH=0: off)
install_process_hooks()  # again, now that Jittor (which sets its own excepthook) is loaded

__version__ = "0.1.0"

__all__ = ["Problem", "check_hypergradient", "HypergradientCheck", "load_config", "list_recipes", "normalize_config", "Operation_REGISTRY",
           "register_class", "get_registered_operation", "operators_by_role",
           "ConfigError", "ConfigTypeError", "MissingConfigKeyError",
           "UnknownOperatorError", "distributed", "higher_jit", "utils", "gm_ol", "na_ol",
           "fo_ol"]
