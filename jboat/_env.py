"""Jittor environment defaults, applied before Jittor is first imported.

Jittor reads a few environment variables at import time. Two of its defaults break
on common machines:

* ``nvcc_path``: when ``nvcc`` is on the PATH but no CUDA driver is present, Jittor
  tries to build its CUDA backend and the import fails. jboat sets
  ``nvcc_path=""`` (CPU only) when no CUDA driver library can be loaded.
* ``use_mkl``: Jittor's CPU matmul is fast only with oneDNN, which Jittor downloads
  from the internet on first use; offline that download fails and so does the
  import. jboat sets ``use_mkl=1`` when Jittor's cache holds a oneDNN that Jittor
  will use without downloading (one placed and validated by
  ``python jboat/tools/onednn.py setup``, run by ``make setup``, or Jittor's own
  download), and ``use_mkl=0`` (Jittor's built-in kernels, same results, slower
  matmuls) otherwise, with a one-line warning on the ``jboat`` logger.

A value the user has already put in the environment is never overridden, and
nothing is changed once Jittor has been imported (it would have no effect; an INFO
record on the ``jboat`` logger then names the defaults that were not applied and the
environment line that applies them, as upstream JBOAT scripts ``import jittor`` first).

This module uses the standard library only: ``jboat/tools/onednn.py`` loads it by
path, without importing jboat (which would import Jittor).
"""

import ctypes
import json
import logging
import os
import sys

logger = logging.getLogger("jboat")

__all__ = ["cuda_driver_available", "jittor_home", "onednn_home", "onednn_status",
           "local_onednn_available", "default_jittor_environment",
           "configure_jittor_environment", "ONEDNN_DIR_NAME", "PLACED_MARKER",
           "VALIDATED_MARKER"]

_CUDA_DRIVER_NAMES = ("libcuda.so.1", "libcuda.so")

#: the folder Jittor 1.3.x looks for under ``<jittor home>/.cache/jittor/mkl`` (Linux x86-64)
ONEDNN_DIR_NAME = "dnnl_lnx_2.2.0_cpu_gomp"
#: written first by jboat's set-up: the folder is jboat's, not (yet) trusted
PLACED_MARKER = "jboat-placed.json"
#: written after a subprocess compiled and ran Jittor's oneDNN matmul from the folder
VALIDATED_MARKER = "jboat-validated.json"


def cuda_driver_available():
    """True when the CUDA driver library can be loaded on this machine."""
    for name in _CUDA_DRIVER_NAMES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def jittor_home():
    """The folder Jittor puts ``.cache/jittor`` under, as ``jittor_utils.home()`` finds it.

    ``$JITTOR_HOME``, else ``JITTOR_HOME`` from ``~/.cache/jittor/config.json``, else
    the user's home. Unlike Jittor's own function this never writes anything.
    """
    home = os.path.expanduser("~")
    configured = home
    config_file = os.path.join(home, ".cache", "jittor", "config.json")
    try:
        with open(config_file, "r", encoding="utf-8") as handle:
            configured = json.load(handle).get("JITTOR_HOME", home) or home
    except (OSError, ValueError, AttributeError):
        pass
    return os.path.abspath(os.environ.get("JITTOR_HOME", configured))


def onednn_home():
    """The oneDNN folder Jittor uses: ``<jittor home>/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp``."""
    return os.path.join(jittor_home(), ".cache", "jittor", "mkl", ONEDNN_DIR_NAME)


def _read_json(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def onednn_status():
    """Whether Jittor would use a local oneDNN offline, and why (or why not).

    Returns:
        ``(usable, reason)``. Usable means: ``lib/libmkldnn.so`` and
        ``include/dnnl.hpp`` exist (symlinks must resolve), the folder is the only
        ``dnnl*`` folder Jittor could pick, and — when jboat's set-up placed it —
        its validation passed for the library now linked.
    """
    root = onednn_home()
    mkl_dir = os.path.dirname(root)
    if not os.path.isdir(root):
        return False, f"no oneDNN in Jittor's cache ({root} does not exist)"
    lib = os.path.join(root, "lib", "libmkldnn.so")
    if not os.path.isfile(lib):
        return False, f"{lib} is missing or a broken link"
    if not os.path.isfile(os.path.join(root, "include", "dnnl.hpp")):
        return False, f"{os.path.join(root, 'include', 'dnnl.hpp')} is missing or a broken link"
    try:
        others = sorted(name for name in os.listdir(mkl_dir) if name.startswith("dnnl")
                        and name != ONEDNN_DIR_NAME
                        and os.path.isdir(os.path.join(mkl_dir, name)))
    except OSError as exc:
        return False, f"cannot list {mkl_dir}: {exc}"
    if others:
        return False, (f"{mkl_dir} also holds {others}; Jittor takes the first dnnl* "
                       f"folder it lists, so the oneDNN it would use is not known")
    if os.path.exists(os.path.join(root, PLACED_MARKER)):
        validated = _read_json(os.path.join(root, VALIDATED_MARKER))
        if validated is None:
            return False, f"{root} was placed by jboat's set-up but not validated"
        if validated.get("library") != os.path.realpath(lib):
            return False, (f"{root} now links {os.path.realpath(lib)}, not the validated "
                           f"{validated.get('library')}")
    return True, f"oneDNN at {root}"


def local_onednn_available():
    """True when Jittor's cache holds a oneDNN that Jittor will use offline."""
    return onednn_status()[0]


def default_jittor_environment():
    """The environment variables jboat would set on this machine (name -> value)."""
    defaults = {}
    if not cuda_driver_available():
        defaults["nvcc_path"] = ""
    defaults["use_mkl"] = "1" if local_onednn_available() else "0"
    return defaults


def configure_jittor_environment():
    """Apply :func:`default_jittor_environment` without overriding user settings.

    Logs one warning when jboat falls back to ``use_mkl=0``.

    Returns:
        the dict of variables that were actually set (empty when Jittor was already
        imported or the user had set them all).
    """
    if "jittor" in sys.modules:
        missing = {name: value for name, value in default_jittor_environment().items()
                   if name not in os.environ}
        if missing:
            # it worked here (Jittor imported), but the same script may not elsewhere
            logger.info("jboat: Jittor was imported before jboat, so jboat's environment "
                        "defaults %s were not applied. Where Jittor's import fails (nvcc "
                        "without a CUDA driver; no oneDNN offline), import jboat first or "
                        "set them in the environment, e.g. %s python script.py "
                        "(docs/migration.md).", missing,
                        " ".join(f'{k}="{v}"' if v == "" else f"{k}={v}"
                                 for k, v in missing.items()))
        return {}
    applied = {}
    for name, value in default_jittor_environment().items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    if applied.get("use_mkl") == "0":
        logger.warning("jboat: Jittor runs without oneDNN (use_mkl=0; same results, slower "
                       "CPU matmuls): %s. Set it up offline with `python "
                       "jboat/tools/onednn.py setup` (make setup), or set use_mkl=0 to "
                       "silence this.", onednn_status()[1])
    return applied
