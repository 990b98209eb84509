"""Set up a local oneDNN that Jittor uses offline (run by ``make setup``).

    python jboat/tools/onednn.py setup      # find or install oneDNN 2.x, place, validate
    python jboat/tools/onednn.py status     # what jboat will do at import
    python jboat/tools/onednn.py remove     # remove the folder jboat placed

Jittor 1.3.x downloads oneDNN 2.2 on first import unless
``<jittor home>/.cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp`` already holds
``lib/libmkldnn.so`` and ``include/dnnl.hpp``. ``setup``

1. compiles Jittor's core once with ``use_mkl=0`` (in a subprocess), so a later
   failure cannot be confused with a core build problem;
2. finds a system oneDNN 2.x (``dnnl.hpp`` + ``libdnnl.so.2``; ``$JBOAT_ONEDNN_ROOT``
   may name a prefix holding ``include/`` and ``lib/``), or, as root on Debian/Ubuntu
   with a 2.x candidate, installs ``libdnnl-dev`` with apt-get (bounded by a timeout;
   ``--no-install`` or ``JBOAT_ONEDNN_INSTALL=0`` skip this);
3. places it for Jittor as symlinks, marked as jboat's and not yet trusted;
4. validates it in a subprocess with ``use_mkl=1``: Jittor must compile its oneDNN
   ops, relay a float32 matmul to ``mkl_matmul`` and match NumPy (forward and
   backward). Only then is the placement marked validated, which is what makes
   ``import jboat`` choose ``use_mkl=1``; otherwise the folder is removed.

Every failure ends in the fallback (``use_mkl=0``: Jittor's built-in kernels, same
results, slower matmuls) with exit status 0, unless ``--strict``. A half-made or
broken placement never makes ``import jboat``/``import jittor`` fail: jboat only
enables oneDNN for a validated placement whose library link is unchanged.

Uses the standard library only and does not import jboat (whose import would
import Jittor); it loads ``jboat/_env.py`` by path.
"""

import argparse
import datetime
import glob
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

logger = logging.getLogger("jboat.onednn")


def _load_env_module():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_env.py")
    spec = importlib.util.spec_from_file_location("_jboat_env_for_onednn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_env = _load_env_module()

#: seconds allowed to the apt-get steps and to the two subprocesses
APT_TIMEOUT = 300
CORE_TIMEOUT = 1800
VALIDATE_TIMEOUT = 900

_VALIDATE_CODE = r"""
import json, sys
import numpy as np
import jittor as jt
from jittor import compile_extern
if compile_extern.mkl_ops is None:
    sys.exit("Jittor did not build its oneDNN ops")
rng = np.random.RandomState(0)
a_np = rng.randn(37, 23).astype(np.float32)
b_np = rng.randn(23, 11).astype(np.float32)
a, b = jt.array(a_np), jt.array(b_np)
with jt.profile_scope(warmup=0, rerun=0) as report:
    c = jt.matmul(a, b)
    ga = jt.grad((c * c).sum(), a)
    jt.sync([c, ga])
names = " ".join(str(row[0]) for row in report[1:])
if "mkl_matmul" not in names:
    sys.exit("Jittor did not relay the matmul to oneDNN")
c_ref = a_np.astype(np.float64) @ b_np
ga_ref = 2 * c_ref @ b_np.T
if not (np.allclose(c.numpy(), c_ref, rtol=1e-4, atol=1e-4)
        and np.allclose(ga.numpy(), ga_ref, rtol=1e-4, atol=1e-3)):
    sys.exit("oneDNN matmul results differ from NumPy")
print("JBOAT_ONEDNN_OK " + json.dumps({"jittor": jt.__version__}))
"""


# -- finding a oneDNN 2.x ----------------------------------------------------------------
def _version_of(include_dir):
    """``(major, minor, patch)`` from ``dnnl_version.h`` under ``include_dir``, or None."""
    for rel in ("oneapi/dnnl/dnnl_version.h", "dnnl_version.h"):
        try:
            with open(os.path.join(include_dir, rel), "r", encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            continue
        parts = [re.search(rf"#define\s+DNNL_VERSION_{k}\s+(\d+)", text)
                 for k in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            return tuple(int(p.group(1)) for p in parts)
    return None


def _library_dirs():
    dirs = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    for prefix in ("/usr", "/usr/local"):
        if multiarch:
            dirs.append(os.path.join(prefix, "lib", multiarch))
        dirs += [os.path.join(prefix, "lib64"), os.path.join(prefix, "lib")]
    return dirs


def find_onednn(prefixes=None):
    """A usable oneDNN 2.x: ``{"include": dir, "library": file, "version": tuple}`` or None.

    Looks under ``$JBOAT_ONEDNN_ROOT`` (``include/``, ``lib/`` or ``lib64/``), then the
    system include and library folders. Only major version 2 fits Jittor 1.3's
    oneDNN ops (oneDNN 3 changed the API).
    """
    candidates = []
    root = os.environ.get("JBOAT_ONEDNN_ROOT")
    if prefixes is None:
        prefixes = [root] if root else []
        prefixes += ["/usr", "/usr/local"]
    for prefix in prefixes:
        include = os.path.join(prefix, "include")
        libdirs = [os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")]
        if prefix in ("/usr", "/usr/local"):
            libdirs = [d for d in _library_dirs() if d.startswith(prefix + "/")]
        candidates.append((include, libdirs))
    for include, libdirs in candidates:
        version = _version_of(include)
        if version is None or version[0] != 2 or not os.path.isfile(
                os.path.join(include, "dnnl.hpp")):
            continue
        for libdir in libdirs:
            for name in ("libdnnl.so.2", "libdnnl.so", "libmkldnn.so"):
                library = os.path.join(libdir, name)
                if os.path.isfile(library):
                    return {"include": include, "library": os.path.realpath(library),
                            "version": version}
    return None


def _run(cmd, timeout, env=None):
    """``(returncode, combined output)``; 124 on timeout, 127 when not runnable."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, env=env, text=True, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n(timed out after {timeout} s)"
    except OSError as exc:
        return 127, str(exc)


def _apt_candidate_major():
    code, out = _run(["apt-cache", "policy", "libdnnl-dev"], 60)
    match = re.search(r"Candidate:\s*(\d+)\.", out) if code == 0 else None
    return int(match.group(1)) if match else None


def install_with_apt(timeout=APT_TIMEOUT):
    """Install Debian's ``libdnnl-dev`` (oneDNN 2.x) as root. Returns ``(ok, message)``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "not root, so apt-get cannot install libdnnl-dev"
    if shutil.which("apt-get") is None:
        return False, "no apt-get on this system"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "libdnnl-dev"]
    major = _apt_candidate_major()
    if major is None:   # no package list yet
        code, out = _run(["apt-get", "update", "-q"], timeout, env)
        major = _apt_candidate_major()
    if major is None:
        return False, "apt knows no libdnnl-dev package (offline, or not Debian/Ubuntu)"
    if major != 2:
        return False, f"apt's libdnnl-dev is oneDNN {major}.x; Jittor 1.3 needs 2.x"
    code, out = _run(install, timeout, env)
    if code != 0:   # a stale package list: refresh once and retry
        _run(["apt-get", "update", "-q"], timeout, env)
        code, out = _run(install, timeout, env)
    if code != 0:
        tail = " ".join(out.strip().splitlines()[-2:])
        return False, f"apt-get install libdnnl-dev failed (status {code}): {tail}"
    return True, "installed libdnnl-dev with apt-get"


# -- placing and validating -------------------------------------------------------------------
def is_jboat_placement(root=None):
    root = root or _env.onednn_home()
    return os.path.exists(os.path.join(root, _env.PLACED_MARKER))


def remove_placement(root=None):
    """Remove the folder jboat placed (never one Jittor downloaded). Returns True if removed."""
    root = root or _env.onednn_home()
    if os.path.isdir(root) and not os.path.islink(root) and (
            is_jboat_placement(root) or not os.listdir(root)):
        shutil.rmtree(root, ignore_errors=True)
        return True
    return False


def place(found, root=None):
    """Make ``root`` a Jittor oneDNN folder of symlinks to ``found`` (not yet validated)."""
    root = root or _env.onednn_home()
    os.makedirs(os.path.dirname(root), exist_ok=True)
    # not dnnl*-named, so neither Jittor nor jboat takes it for a oneDNN folder
    staging = os.path.join(os.path.dirname(root), ".jboat-staging")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(os.path.join(staging, "include"))
    os.makedirs(os.path.join(staging, "lib"))
    with open(os.path.join(staging, _env.PLACED_MARKER), "w", encoding="utf-8") as handle:
        json.dump({"source": found["include"], "library": found["library"],
                   "version": ".".join(map(str, found["version"]))}, handle)
    for path in glob.glob(os.path.join(found["include"], "dnnl*.h*")):
        os.symlink(path, os.path.join(staging, "include", os.path.basename(path)))
    if os.path.isdir(os.path.join(found["include"], "oneapi")):
        os.symlink(os.path.join(found["include"], "oneapi"),
                   os.path.join(staging, "include", "oneapi"))
    os.symlink(found["library"], os.path.join(staging, "lib", "libmkldnn.so"))
    remove_placement(root)
    os.rename(staging, root)
    return root


def jittor_env(use_mkl):
    """Environment for a Jittor subprocess with ``use_mkl`` forced."""
    env = dict(os.environ)
    if not _env.cuda_driver_available():
        env.setdefault("nvcc_path", "")
    env["use_mkl"] = "1" if use_mkl else "0"
    env.pop("mkl_include_path", None)   # Jittor 1.3.11 fails on these (UnboundLocalError)
    env.pop("mkl_lib_path", None)
    return env


def warm_jittor_core(timeout=CORE_TIMEOUT):
    """Import Jittor once with ``use_mkl=0`` (compiles its core on a fresh machine)."""
    code, out = _run([sys.executable, "-c", "import jittor"], timeout, jittor_env(False))
    if code != 0:
        return False, "importing Jittor with use_mkl=0 failed: " + " ".join(
            out.strip().splitlines()[-3:])
    return True, "Jittor core ready"


def validate(timeout=VALIDATE_TIMEOUT):
    """Compile and run Jittor's oneDNN matmul in a subprocess. Returns ``(ok, message)``."""
    code, out = _run([sys.executable, "-c", _VALIDATE_CODE], timeout, jittor_env(True))
    if code == 0 and "JBOAT_ONEDNN_OK" in out:
        return True, "Jittor compiled and ran its oneDNN matmul"
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return False, f"validation failed (status {code}): " + " | ".join(lines[-3:])


def mark_validated(root=None):
    root = root or _env.onednn_home()
    library = os.path.realpath(os.path.join(root, "lib", "libmkldnn.so"))
    with open(os.path.join(root, _env.VALIDATED_MARKER), "w", encoding="utf-8") as handle:
        json.dump({"library": library,
                   "validated_at": datetime.datetime.now().isoformat(timespec="seconds")},
                  handle)


def setup(install=True, revalidate=False, validate_fn=None, warm_fn=None):
    """Steps 1-4 of the module docstring. Returns ``(ok, message)``; never raises."""
    validate_fn = validate_fn or validate
    warm_fn = warm_fn or warm_jittor_core
    try:
        root = _env.onednn_home()
        usable, reason = _env.onednn_status()
        if usable and not revalidate:
            return True, f"oneDNN already set up ({reason})"
        foreign = os.path.isdir(root) and not is_jboat_placement(root) and bool(os.listdir(root))
        if foreign and not usable:
            return False, (f"{root} was not placed by jboat and is unusable ({reason}); "
                           f"left as it is: remove it and run this again")
        ok, message = warm_fn()
        if not ok:
            return False, message
        if foreign:   # Jittor's own download, asked to revalidate: check, never touch
            ok, message = validate_fn()
            return ok, (f"Jittor's own oneDNN at {root}: {message}" if ok else
                        f"Jittor's own oneDNN at {root} does not work ({message}); set "
                        f"use_mkl=0 or remove that folder")
        found = find_onednn()
        notes = []
        if found is None and install and os.environ.get("JBOAT_ONEDNN_INSTALL", "1") != "0":
            ok, message = install_with_apt()
            notes.append(message)
            found = find_onednn() if ok else None
        if found is None:
            remove_placement(root)
            return False, "no oneDNN 2.x found" + (f" ({'; '.join(notes)})" if notes else "")
        place(found, root)
        ok, message = validate_fn()
        if not ok:
            remove_placement(root)
            return False, message
        mark_validated(root)
        usable, reason = _env.onednn_status()
        if not usable:
            remove_placement(root)
            return False, reason
        version = ".".join(map(str, found["version"]))
        return True, f"oneDNN {version} from {found['library']} placed at {root} and validated"
    except Exception as exc:  # set-up must never break the caller's install
        try:
            remove_placement()
        except Exception:
            pass
        return False, f"unexpected error: {exc!r}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="setup", choices=("setup", "status", "remove"))
    parser.add_argument("--no-install", action="store_true",
                        help="never run apt-get; use only an installed oneDNN 2.x")
    parser.add_argument("--revalidate", action="store_true",
                        help="validate again even when a validated placement exists")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when the fallback (use_mkl=0) is used")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "status":
        usable, reason = _env.onednn_status()
        logger.info("use_mkl=%s: %s", "1" if usable else "0", reason)
        return 0
    if args.command == "remove":
        removed = remove_placement()
        logger.info("removed %s" if removed else "nothing jboat placed at %s", _env.onednn_home())
        return 0
    start = time.time()
    if os.environ.get("JBOAT_ONEDNN", "1") == "0":
        ok, message = False, "skipped (JBOAT_ONEDNN=0)"
    else:
        ok, message = setup(install=not args.no_install, revalidate=args.revalidate)
    took = time.time() - start
    if ok:
        logger.info("jboat oneDNN set-up: %s [%.0f s]; Jittor will use oneDNN (use_mkl=1).",
                    message, took)
        return 0
    logger.warning("jboat oneDNN set-up: %s [%.0f s]; falling back to Jittor's built-in CPU "
                   "kernels (use_mkl=0: same results, slower matmuls).", message, took)
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
