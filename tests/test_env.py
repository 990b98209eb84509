"""jboat/_env.py: which Jittor environment jboat sets, and when."""

import json
import logging
import os
import sys

import pytest

from jboat import _env


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("JITTOR_HOME", raising=False)
    return tmp_path


def _make_onednn(root, lib=True, header=True):
    os.makedirs(os.path.join(root, "lib"), exist_ok=True)
    os.makedirs(os.path.join(root, "include"), exist_ok=True)
    if lib:
        open(os.path.join(root, "lib", "libmkldnn.so"), "w").close()
    if header:
        open(os.path.join(root, "include", "dnnl.hpp"), "w").close()


def test_jittor_home_follows_jittor_rules(home, monkeypatch):
    assert _env.jittor_home() == str(home)
    config = home / ".cache" / "jittor" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"JITTOR_HOME": str(home / "configured")}))
    assert _env.jittor_home() == str(home / "configured")
    monkeypatch.setenv("JITTOR_HOME", str(home / "from_env"))
    assert _env.jittor_home() == str(home / "from_env")
    assert _env.onednn_home() == os.path.join(str(home / "from_env"), ".cache", "jittor",
                                              "mkl", _env.ONEDNN_DIR_NAME)


def test_complete_jittor_download_is_usable(home):
    _make_onednn(_env.onednn_home())
    assert _env.onednn_status() == (True, f"oneDNN at {_env.onednn_home()}")


@pytest.mark.parametrize("broken, words", [
    ("missing", "does not exist"),
    ("no_lib", "libmkldnn.so is missing"),
    ("dangling_lib", "libmkldnn.so is missing or a broken link"),
    ("no_header", "dnnl.hpp is missing"),
    ("second_folder", "first dnnl* folder"),
    ("not_validated", "not validated"),
    ("library_changed", "not the validated"),
])
def test_unusable_placements_are_reported(home, broken, words):
    root = _env.onednn_home()
    if broken != "missing":
        _make_onednn(root, lib=broken not in ("no_lib", "dangling_lib"),
                     header=broken != "no_header")
    if broken == "dangling_lib":
        os.symlink(str(home / "gone.so"), os.path.join(root, "lib", "libmkldnn.so"))
    if broken == "second_folder":
        os.makedirs(os.path.join(os.path.dirname(root), "dnnl_lnx_3.0_cpu"))
    if broken in ("not_validated", "library_changed"):
        open(os.path.join(root, _env.PLACED_MARKER), "w").close()
    if broken == "library_changed":
        with open(os.path.join(root, _env.VALIDATED_MARKER), "w") as handle:
            json.dump({"library": "/elsewhere/libdnnl.so.2.6"}, handle)
    usable, reason = _env.onednn_status()
    assert not usable and words in reason
    assert _env.default_jittor_environment()["use_mkl"] == "0"


def test_validated_placement_is_usable(home):
    root = _env.onednn_home()
    _make_onednn(root)
    open(os.path.join(root, _env.PLACED_MARKER), "w").close()
    with open(os.path.join(root, _env.VALIDATED_MARKER), "w") as handle:
        json.dump({"library": os.path.realpath(os.path.join(root, "lib", "libmkldnn.so"))},
                  handle)
    assert _env.onednn_status()[0]
    assert _env.default_jittor_environment()["use_mkl"] == "1"


@pytest.fixture
def fresh_process(monkeypatch):
    """As if Jittor had not been imported and the user had set nothing."""
    monkeypatch.delitem(sys.modules, "jittor", raising=False)
    for name in ("use_mkl", "nvcc_path"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_fallback_sets_use_mkl_0_with_one_warning(home, fresh_process, caplog):
    with caplog.at_level(logging.WARNING, logger="jboat"):
        applied = _env.configure_jittor_environment()
    assert applied["use_mkl"] == "0" and os.environ["use_mkl"] == "0"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "use_mkl=0" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_user_settings_win_and_silence_the_warning(home, fresh_process, caplog):
    fresh_process.setenv("use_mkl", "0")
    fresh_process.setenv("nvcc_path", "/somewhere/nvcc")
    with caplog.at_level(logging.WARNING, logger="jboat"):
        applied = _env.configure_jittor_environment()
    assert "use_mkl" not in applied and "nvcc_path" not in applied
    assert os.environ["nvcc_path"] == "/somewhere/nvcc"
    assert not caplog.records


def test_usable_onednn_sets_use_mkl_1(home, fresh_process):
    _make_onednn(_env.onednn_home())
    assert _env.configure_jittor_environment()["use_mkl"] == "1"


def test_nothing_changes_after_jittor_import(home, monkeypatch, caplog):
    import jittor  # noqa: F401  (conftest imported it already)
    monkeypatch.delenv("use_mkl", raising=False)
    with caplog.at_level(logging.INFO, logger="jboat"):
        assert _env.configure_jittor_environment() == {}
    assert "use_mkl" not in os.environ
    # upstream scripts import jittor first: say what was not applied, and the fix
    (record,) = [r for r in caplog.records if "imported before jboat" in r.getMessage()]
    assert record.levelno == logging.INFO and "use_mkl=0 python script.py" in record.getMessage()
