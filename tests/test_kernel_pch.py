"""jboat/_kernel_pch.py: Jittor's CPU kernels compiled against a precompiled header."""

import os
import shlex
import subprocess
import sys
import types

import jboat  # noqa: F401  (installs the header on import)
import jittor as jt
import numpy as np
import pytest

from jboat import _kernel_pch

pytestmark = pytest.mark.skipif(jt.flags.cc_type != "g++" or jt.has_cuda
                                or not sys.platform.startswith("linux"),
                                reason="the precompiled kernel header is for g++ CPU kernels")


def installed_header():
    words = shlex.split(jt.flags.cc_flags)
    return words[words.index("-include") + 1] if "-include" in words else None


def test_importing_jboat_installs_the_header_once():
    header = installed_header()
    assert header is not None, jt.flags.cc_flags
    assert os.path.isfile(header) and os.path.isfile(header + ".gch")
    assert header.startswith(os.path.join(jt.flags.cache_path, "jboat_pch") + os.sep)
    flags = jt.flags.cc_flags
    assert _kernel_pch.install_kernel_pch(jt) == header     # idempotent
    assert jt.flags.cc_flags == flags
    assert jt.flags.cc_flags.count("-include") == 1


def test_gcc_uses_the_precompiled_header_for_a_kernel_compile(tmp_path):
    """The same flags as the kernels' compile-to-assembly step: g++ -H marks a loaded
    precompiled header with '!' (an unusable one would be parsed as text, silently)."""
    header = installed_header()
    flags = _kernel_pch._compile_flags(jt.flags.cc_flags)
    assert _kernel_pch._accepted(jt.flags.cc_path, flags, header, str(tmp_path))


def test_kernels_compiled_with_the_header_compute_the_same_values():
    """A fresh fused kernel (constants no other test uses: a new compile) and a reduction,
    against numpy."""
    x = np.linspace(-1.0, 1.0, 35).reshape(5, 7).astype("float32")
    y = (jt.array(x) * 1.8371 - 0.2917).exp().sum(dim=1).numpy()
    np.testing.assert_allclose(y, np.exp(x * 1.8371 - 0.2917).sum(axis=1), rtol=1e-5)


def run_python(code, **env):
    environment = dict(os.environ, **env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_switched_off_by_the_environment():
    code = "import jboat, jittor as jt; print('-include' in jt.flags.cc_flags)"
    assert run_python(code, JBOAT_KERNEL_PCH="0") == "False"


def test_the_header_path_changes_with_the_flags_and_the_compiler():
    args = (jt.flags.jittor_path, jt.flags.cc_path)
    base = _kernel_pch._signature(*args, "-O2")
    assert _kernel_pch._signature(*args, "-O2") == base
    assert _kernel_pch._signature(*args, "-O2 -DX=1") != base
    assert _kernel_pch._signature(jt.flags.jittor_path, "/usr/bin/true", "-O2") != base


def fake_jittor(cc_path="/usr/bin/g++", cc_type="g++", cc_flags="-O2", cache_path=None):
    flags = types.SimpleNamespace(cc_path=cc_path, cc_type=cc_type, cc_flags=cc_flags,
                                  cache_path=cache_path, jittor_path=jt.flags.jittor_path)
    return types.SimpleNamespace(flags=flags)


def test_other_compilers_are_left_alone(tmp_path):
    fake = fake_jittor(cc_type="clang", cache_path=str(tmp_path))
    assert _kernel_pch.install_kernel_pch(fake) is None
    assert fake.flags.cc_flags == "-O2" and not os.listdir(tmp_path)


def test_a_failing_compile_changes_nothing(tmp_path):
    """A compiler that fails (here: `false`) leaves the flags as they were and no
    precompiled header behind."""
    fake = fake_jittor(cc_path="/bin/false", cache_path=str(tmp_path))
    assert _kernel_pch.install_kernel_pch(fake) is None
    assert fake.flags.cc_flags == "-O2"
    left = [name for _, _, files in os.walk(tmp_path) for name in files]
    assert not [name for name in left if name.endswith(".gch")], left


def test_a_header_gcc_refuses_is_removed_and_not_used(tmp_path, monkeypatch):
    header = installed_header()
    plain = jt.flags.cc_flags.replace(f"-include {shlex.quote(header)}", "")
    assert "-include" not in plain
    fake = fake_jittor(cache_path=str(tmp_path), cc_flags=plain)
    monkeypatch.setattr(_kernel_pch, "_accepted", lambda *args: False)
    flags = fake.flags.cc_flags
    assert _kernel_pch.install_kernel_pch(fake) is None
    assert fake.flags.cc_flags == flags
    left = [name for _, _, files in os.walk(tmp_path) for name in files]
    assert not [name for name in left if name.endswith(".gch")], left
