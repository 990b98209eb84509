"""oneDNN set-up (jboat/tools/onednn.py) and the oneDNN vs built-in-kernels results."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jboat import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "jboat_onednn_tool", os.path.join(ROOT, "jboat", "tools", "onednn.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


onednn = _load_tool()


# -- the two paths give the same hyper-gradients ---------------------------------------------
def _run_case(use_mkl):
    env = onednn.jittor_env(use_mkl)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "onednn_case.py")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=900, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_onednn_and_builtin_kernels_give_the_same_hypergradients():
    usable, reason = _env.onednn_status()
    if not usable:
        pytest.skip(f"oneDNN is not set up for Jittor ({reason}); run "
                    f"`python jboat/tools/onednn.py setup` (make setup)")
    with_mkl, without = _run_case(True), _run_case(False)
    assert with_mkl["use_mkl"] == "1" and without["use_mkl"] == "0"
    # the comparison means something only if oneDNN did the matmuls in one run only
    assert all(with_mkl["mkl_matmul"].values()), with_mkl["mkl_matmul"]
    assert not any(without["mkl_matmul"].values()), without["mkl_matmul"]
    assert set(with_mkl["grads"]) == set(without["grads"])
    for name, grads in with_mkl["grads"].items():
        for a, b in zip(grads, without["grads"][name]):
            a, b = np.asarray(a), np.asarray(b)
            assert np.abs(b).max() > 1e-4   # a real gradient, not zeros
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * np.abs(b).max(),
                                       err_msg=name)


# -- set-up logic on fake installations (no Jittor involved) ---------------------------------
def _fake_onednn(prefix, major=2):
    include, lib = prefix / "include", prefix / "lib"
    (include / "oneapi" / "dnnl").mkdir(parents=True)
    lib.mkdir()
    (include / "oneapi" / "dnnl" / "dnnl_version.h").write_text(
        f"#define DNNL_VERSION_MAJOR {major}\n#define DNNL_VERSION_MINOR 6\n"
        f"#define DNNL_VERSION_PATCH 3\n")
    (include / "dnnl.hpp").write_text("// header\n")
    (lib / "libdnnl.so.2").write_text("")
    return prefix


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty user home, so Jittor's cache folder is a temporary one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JITTOR_HOME", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_find_onednn_takes_version_2_only(tmp_path):
    found = onednn.find_onednn([str(_fake_onednn(tmp_path / "v2"))])
    assert found["version"] == (2, 6, 3)
    assert found["library"].endswith("libdnnl.so.2")
    assert onednn.find_onednn([str(_fake_onednn(tmp_path / "v3", major=3))]) is None
    assert onednn.find_onednn([str(tmp_path / "nothing")]) is None


def test_placement_is_trusted_only_after_validation(home, tmp_path):
    found = onednn.find_onednn([str(_fake_onednn(tmp_path / "prefix"))])
    root = onednn.place(found)
    assert root == _env.onednn_home()
    assert os.path.isfile(os.path.join(root, "lib", "libmkldnn.so"))
    assert os.path.isfile(os.path.join(root, "include", "dnnl.hpp"))
    assert not _env.local_onednn_available()          # placed, not yet validated
    assert _env.default_jittor_environment()["use_mkl"] == "0"
    onednn.mark_validated(root)
    assert _env.local_onednn_available()
    assert _env.default_jittor_environment()["use_mkl"] == "1"
    assert onednn.remove_placement()
    assert not os.path.exists(root)


def test_failed_validation_removes_the_placement_and_falls_back(home, tmp_path, monkeypatch):
    monkeypatch.setenv("JBOAT_ONEDNN_ROOT", str(_fake_onednn(tmp_path / "prefix")))
    ok, message = onednn.setup(install=False, warm_fn=lambda: (True, "warm"),
                               validate_fn=lambda: (False, "validation failed: boom"))
    assert not ok and "boom" in message
    assert not os.path.exists(_env.onednn_home())
    assert _env.default_jittor_environment()["use_mkl"] == "0"
    ok, message = onednn.setup(install=False, warm_fn=lambda: (True, "warm"),
                               validate_fn=lambda: (True, "fine"))
    assert ok, message
    assert _env.default_jittor_environment()["use_mkl"] == "1"


def test_setup_never_raises_and_finds_nothing_gracefully(home, monkeypatch):
    monkeypatch.setattr(onednn, "find_onednn", lambda prefixes=None: None)
    ok, message = onednn.setup(install=False, warm_fn=lambda: (True, "warm"))
    assert not ok and "no oneDNN 2.x" in message

    def broken():
        raise RuntimeError("disk full")
    ok, message = onednn.setup(install=False, warm_fn=broken)
    assert not ok and "disk full" in message
    assert not os.path.exists(_env.onednn_home())


def test_foreign_oneDNN_folder_is_left_alone(home):
    root = _env.onednn_home()
    os.makedirs(os.path.join(root, "lib"))            # e.g. an interrupted Jittor download
    ok, message = onednn.setup(install=False, warm_fn=lambda: (True, "warm"),
                               validate_fn=lambda: (True, "fine"))
    assert not ok and "not placed by jboat" in message
    assert os.path.isdir(os.path.join(root, "lib"))
    assert not onednn.remove_placement()


def test_validate_reports_a_failing_subprocess(monkeypatch):
    monkeypatch.setattr(onednn, "_VALIDATE_CODE", "import sys; sys.exit('no oneDNN here')")
    ok, message = onednn.validate(timeout=60)
    assert not ok and "no oneDNN here" in message


def test_cli_exit_status(home, monkeypatch):
    monkeypatch.setenv("JBOAT_ONEDNN", "0")
    assert onednn.main(["setup"]) == 0                 # fallback is not an error
    assert onednn.main(["setup", "--strict"]) == 1
    assert onednn.main(["status"]) == 0
