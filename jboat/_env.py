"""Jittor environment defaults, applied before Jittor is first imported.

Jittor reads a few environment variables at import time. Two of its defaults break
on common machines:

* ``nvcc_path``: when ``nvcc`` is on the PATH but no CUDA driver is present, Jittor
  tries to build its CUDA backend and the import fails. jboat sets
  ``nvcc_path=""`` (CPU only) when no CUDA driver library can be loaded.
* ``use_mkl``: Jittor downloads oneDNN from the internet on first use; offline that
  fails. jboat sets ``use_mkl=0`` (Jittor's built-in CPU kernels) unless a local
  oneDNN that Jittor accepts is already in Jittor's cache.

A value the user has already put in the environment is never overridden, and
nothing is changed once Jittor has been imported (it would have no effect).
"""

import ctypes
import logging
import os
import sys

logger = logging.getLogger("jboat")

_CUDA_DRIVER_NAMES = ("libcuda.so.1", "libcuda.so")


def cuda_driver_available():
    """True when the CUDA driver library can be loaded on this machine."""
    for name in _CUDA_DRIVER_NAMES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def local_onednn_available():
    """True when Jittor's cache already holds a oneDNN build it will use offline."""
    root = os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mkl",
                        "dnnl_lnx_2.2.0_cpu_gomp")
    return (os.path.isfile(os.path.join(root, "lib", "libmkldnn.so"))
            and os.path.isfile(os.path.join(root, "include", "dnnl.hpp")))


def default_jittor_environment():
    """The environment variables jboat would set on this machine (name -> value)."""
    defaults = {}
    if not cuda_driver_available():
        defaults["nvcc_path"] = ""
    if not local_onednn_available():
        defaults["use_mkl"] = "0"
    return defaults


def configure_jittor_environment():
    """Apply :func:`default_jittor_environment` without overriding user settings.

    Returns the dict of variables that were actually set (empty when Jittor was
    already imported or the user had set them all).
    """
    if "jittor" in sys.modules:
        return {}
    applied = {}
    for name, value in default_jittor_environment().items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied
