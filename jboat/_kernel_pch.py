"""A precompiled header for Jittor's CPU kernels: each new kernel compiles about 2.5x faster.

Jittor compiles every new fused CPU kernel with ``g++`` the first time it runs. About
two thirds of each compile is parsing the same ~74,000 lines of Jittor headers
(``var.h``, ``ops/op_register.h``, ``fused_op.h``, ...), once per kernel. A cold run
of a bilevel problem compiles hundreds of kernels (jboat's test suite about 2,300), so
that parsing dominates the first run on a fresh machine.

When Jittor compiles its CPU kernels with ``g++`` on Linux (and has no CUDA: the CUDA
path is left as Jittor has it), importing jboat therefore:

1. writes a header that includes those headers (with the two macros every CPU kernel
   defines first, ``JIT`` and ``JIT_cpu``) into Jittor's cache folder, under a name
   keyed by the compile flags and the contents of Jittor's headers, and precompiles it
   once with the kernels' own flags (a few seconds, once per Jittor installation);
2. checks that ``g++`` accepts the precompiled header for a kernel compile (``-H``
   names it), and only then
3. appends ``-include <that header>`` to ``jt.flags.cc_flags``, so every later CPU
   kernel compile loads the precompiled header instead of parsing the headers again.

The generated code is unchanged: the header holds only ``#include`` lines of headers the
kernels include themselves, guarded by ``#pragma once``, and the two macros with the
values the kernels give them. Jittor's kernel cache keys hold the compile command, so
kernels compiled without the header (plain Jittor, ``JBOAT_KERNEL_PCH=0``) are
recompiled once under jboat, and the other way round.

Off with ``JBOAT_KERNEL_PCH=0`` in the environment. Where anything fails (no ``g++``,
another compiler, CUDA kernels only, a read-only cache) nothing is changed and a DEBUG
record on the ``jboat`` logger says why. Nothing is printed.
"""

import hashlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile

logger = logging.getLogger("jboat")

__all__ = ["HEADERS", "install_kernel_pch", "kernel_pch_path"]

#: the Jittor headers the CPU kernels include most (counted over 13,000 cached kernels)
HEADERS = (
    "<cmath>", "<algorithm>", "<assert.h>", "<limits>",
    '"var.h"', '"ops/op_register.h"', '"ops/broadcast_to_op.h"', '"ops/binary_op.h"',
    '"ops/array_op.h"', '"fused_op.h"', '"ops/ternary_op.h"', '"ops/unary_op.h"',
    '"misc/cpu_math.h"', '"executor.h"', '"ops/reduce_op.h"', '"ops/reindex_op.h"',
    '"ops/reindex_reduce_op.h"', '"ops/code_op.h"', '"misc/cuda_flags.h"',
    '"ops/getitem_op.h"', '"ops/setitem_op.h"', '"ops/index_op.h"',
)

_FLAG = "-include"
_NAME = "jboat_kernels.h"
#: Jittor's asm_tuner.py compiles each kernel to assembly (``-S -g``) without its link
#: flags, then assembles it: the header is precompiled with those compile flags
_LINK_FLAGS = ("-l", "-L", "-Wl,", "-shared")


def _header_text():
    lines = ["// jboat: precompiled for Jittor's CPU kernels (see jboat/_kernel_pch.py)",
             "#pragma once", "#define JIT 1", "#define JIT_cpu 1"]
    lines += [f"#include {name}" for name in HEADERS]
    return "\n".join(lines) + "\n"


def _compile_flags(cc_flags):
    """The flags of the kernels' compile-to-assembly step, without linking or output."""
    return [w for w in shlex.split(cc_flags) if not w.startswith(_LINK_FLAGS)] + ["-g"]


def _signature(jittor_path, cc_path, cc_flags):
    """Changes when the compiler, its flags or any of Jittor's headers change."""
    digest = hashlib.sha1()
    digest.update(_header_text().encode())
    digest.update(cc_path.encode() + b"\0" + cc_flags.encode() + b"\0")
    try:
        digest.update(subprocess.run([cc_path, "--version"], capture_output=True,
                                     timeout=30).stdout)
    except (OSError, subprocess.SubprocessError):
        pass
    src = os.path.join(jittor_path, "src")
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            if name.endswith((".h", ".hpp")):
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    digest.update(path.encode() + b"\0" + handle.read())
    return digest.hexdigest()[:16]


def kernel_pch_path(cache_path, signature):
    """Where the header lives: ``<Jittor's cache>/jboat_pch/<signature>/jboat_kernels.h``."""
    return os.path.join(cache_path, "jboat_pch", signature, _NAME)


def _accepted(cc_path, flags, header, folder):
    """True when g++ loads the precompiled header (``-H`` marks it with '!')."""
    probe = os.path.join(folder, "probe.cc")
    with open(probe, "w", encoding="utf-8") as handle:
        handle.write('#define JIT 1\n#define JIT_cpu 1\n#include "var.h"\n')
    result = subprocess.run([cc_path, probe, *flags, _FLAG, header, "-H", "-fsyntax-only"],
                            capture_output=True, text=True, timeout=120)
    return result.returncode == 0 and ("! " + header + ".gch") in result.stderr


def _build(cc_path, flags, header):
    folder = os.path.dirname(header)
    os.makedirs(folder, exist_ok=True)
    gch = header + ".gch"
    if os.path.exists(gch) and os.path.exists(header):
        return True  # built (and accepted: see install_kernel_pch) by an earlier process
    # write both files under temporary names, then rename: another process building the
    # same header at the same time never sees half a file
    fd, tmp_header = tempfile.mkstemp(dir=folder, suffix=".h")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(_header_text())
    os.chmod(tmp_header, 0o644)
    tmp_gch = tmp_header + ".gch"
    try:
        result = subprocess.run([cc_path, "-x", "c++-header", tmp_header, *flags, "-o", tmp_gch],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            logger.debug("jboat: kernel header not precompiled: %s", result.stderr[-2000:])
            return False
        os.replace(tmp_header, header)
        os.replace(tmp_gch, gch)
        return True
    finally:
        for path in (tmp_header, tmp_gch):
            if os.path.exists(path):
                os.remove(path)


def install_kernel_pch(jt=None):
    """Precompile the kernels' headers and tell Jittor to use them; returns the header path.

    Returns None (and changes nothing) where it does not apply or fails: see the module's
    docstring. Idempotent.
    """
    if os.environ.get("JBOAT_KERNEL_PCH", "1").strip() in ("0", "false", "no", "off"):
        return None
    if not sys.platform.startswith("linux"):
        return None
    if jt is None:
        import jittor as jt
    flags = jt.flags
    try:
        cc_path, cc_type, cc_flags = flags.cc_path, flags.cc_type, flags.cc_flags
        cache_path, jittor_path = flags.cache_path, flags.jittor_path
    except AttributeError:
        return None
    if cc_type != "g++" or not cc_path:
        return None
    if getattr(jt, "has_cuda", False):  # CUDA machines: left as Jittor has it (untested there)
        return None
    words = shlex.split(cc_flags)
    if _FLAG in words:  # already installed (or the user put a header of their own)
        index = words.index(_FLAG)
        return words[index + 1] if index + 1 < len(words) else None
    try:
        signature = _signature(jittor_path, cc_path, cc_flags)
        header = kernel_pch_path(cache_path, signature)
        compile_flags = _compile_flags(cc_flags)
        built_before = os.path.exists(header + ".gch")
        if not _build(cc_path, compile_flags, header):
            return None
        if not built_before:
            with tempfile.TemporaryDirectory(dir=os.path.dirname(header)) as folder:
                if not _accepted(cc_path, compile_flags, header, folder):
                    logger.debug("jboat: g++ does not accept the precompiled kernel header "
                                 "%s", header)
                    os.remove(header + ".gch")  # the next process tries again
                    return None
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        logger.debug("jboat: kernel header not precompiled: %s", error)
        return None
    flags.cc_flags = cc_flags + f" {_FLAG} {shlex.quote(header)} "
    return header
