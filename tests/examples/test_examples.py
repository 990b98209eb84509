"""The example scripts run end to end (in-process, tiny sizes) and return sane metrics."""

import gzip
import math
import os
import struct
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import _data  # noqa: E402
import hyper_cleaning  # noqa: E402
import meta_learning  # noqa: E402
import nas_darts  # noqa: E402

TINY_CLEANING = ["--iters", "3", "--n-train", "40", "--n-val", "20", "--n-test", "40", "--quiet"]


def _is_fraction(value):
    return isinstance(value, float) and 0.0 <= value <= 1.0


def _is_finite_float(value):
    return isinstance(value, float) and math.isfinite(value)


# -- hyper-cleaning ------------------------------------------------------------------------
def test_hyper_cleaning_smoke():
    metrics = hyper_cleaning.main(TINY_CLEANING)
    for key in ("test_accuracy", "baseline_test_accuracy", "f1", "precision", "recall"):
        assert _is_fraction(metrics[key]), key
    assert _is_finite_float(metrics["val_loss"])
    assert metrics["lower_steps"] == 3 * 10          # configs/rhg.yaml: lower_iters 10


def test_hyper_cleaning_beats_the_noisy_label_baseline():
    """Moderate size: the learned weights must clean the data (digits, or the synthetic
    fallback when scikit-learn is missing)."""
    metrics = hyper_cleaning.main(["--iters", "60", "--n-train", "300", "--n-val", "100",
                                   "--n-test", "300", "--quiet"])
    assert metrics["test_accuracy"] > metrics["baseline_test_accuracy"] + 0.03, metrics
    assert metrics["f1"] > 0.7, metrics


def test_hyper_cleaning_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    hyper_cleaning.main(TINY_CLEANING + ["--plot", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(folder, gz):
    rng = np.random.RandomState(0)
    for part, n in (("train", 60), ("t10k", 30)):
        suffix = ".gz" if gz else ""
        _write_idx(os.path.join(folder, f"{part}-images-idx3-ubyte{suffix}"),
                   rng.randint(0, 256, size=(n, 28, 28)), gz)
        _write_idx(os.path.join(folder, f"{part}-labels-idx1-ubyte{suffix}"),
                   rng.randint(0, 10, size=n), gz)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_mnist_idx_loader(tmp_path, gz):
    _fake_mnist(str(tmp_path), gz)
    x, y = _data.load_mnist_idx(str(tmp_path), "train")
    assert x.shape == (60, 784) and x.dtype == np.float32 and 0.0 <= x.min() <= x.max() <= 1.0
    assert y.shape == (60,) and set(np.unique(y)) <= set(range(10))
    x, y, source = _data.load_classification(mnist_dir=str(tmp_path))
    assert x.shape == (90, 784) and "idx files" in source


def test_mnist_idx_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--mnist-dir"):
        _data.load_mnist_idx(str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")
    with pytest.raises(ValueError, match="not an idx file"):
        _data.load_mnist_idx(str(tmp_path))


def test_hyper_cleaning_on_idx_files(tmp_path):
    _fake_mnist(str(tmp_path), gz=True)
    metrics = hyper_cleaning.main(["--mnist-dir", str(tmp_path), "--iters", "2",
                                   "--n-train", "30", "--n-val", "20", "--n-test", "20",
                                   "--quiet"])
    assert _is_fraction(metrics["test_accuracy"]) and "idx files" in metrics["data"]


def test_synthetic_fallback_without_scikit_learn(monkeypatch, capsys):
    def missing():
        raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr(_data, "load_digits", missing)
    x, y, source = _data.load_classification("digits", seed=0)
    assert "synthetic" in source and x.shape[0] == y.shape[0] >= 1000
    assert "scikit-learn is not installed" in capsys.readouterr().err


def test_corrupt_labels_changes_exactly_the_flagged_fraction():
    y = np.arange(200) % 10
    noisy, mask = _data.corrupt_labels(y, 0.4, 10, seed=1)
    assert mask.sum() == 80
    assert np.all(noisy[mask] != y[mask]) and np.all(noisy[~mask] == y[~mask])


# -- meta-learning -------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["maml.yaml", "fomaml.yaml", "imaml.yaml",
                                    "imaml_implicit.yaml"])
def test_meta_learning_smoke(recipe):
    metrics = meta_learning.main(["--config", os.path.join(ROOT, "configs", recipe),
                                  "--iters", "3", "--meta-batch", "2", "--eval-tasks", "2",
                                  "--eval-query", "10", "--quiet"])
    for key in ("post_adaptation_loss", "pre_adaptation_loss",
                "random_init_post_adaptation_loss", "final_train_query_loss"):
        assert _is_finite_float(metrics[key]) and metrics[key] >= 0.0, key
    assert metrics["adaptation_steps"] == 5
    assert metrics["proximal"] == (meta_learning.IMPLICIT_PROXIMAL
                                   if recipe.startswith("imaml") else 0.0)


# -- DARTS ---------------------------------------------------------------------------------
def test_nas_darts_smoke():
    metrics = nas_darts.main(["--iters", "3", "--n-train", "50", "--n-val", "50", "--quiet"])
    assert len(metrics["genotype"]) == len(nas_darts.EDGES)
    assert all(op in nas_darts.OPERATIONS and op != "zero" for op in metrics["genotype"])
    weights = np.asarray(metrics["op_weights"])
    assert weights.shape == (len(nas_darts.EDGES), len(nas_darts.OPERATIONS))
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)
    assert _is_finite_float(metrics["val_loss"])
    assert _is_fraction(metrics["val_accuracy"]) and _is_fraction(metrics["test_accuracy"])


def test_darts_derive_skips_the_zero_operation():
    alphas = np.array([[0.0, 0.1, 0.2, 5.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert nas_darts.derive(alphas) == ["relu-linear", "identity", "relu-linear"]


# -- long unroll (checkpointed reverse mode) ---------------------------------------------------
def test_long_unroll_checkpointed_equals_plain_and_learns():
    import long_unroll

    tiny = ["--features", "20", "--lower-iters", "12", "--iters", "2", "--quiet"]
    checkpointed = long_unroll.main(tiny)
    plain = long_unroll.main(tiny + ["--plain"])
    # same hyper-gradients, hence the same UL iterates and losses
    assert np.allclose(checkpointed["ul_losses"], plain["ul_losses"], rtol=1e-5)
    assert checkpointed["ul_losses"][1] < checkpointed["ul_losses"][0]
    assert isinstance(checkpointed["peak_mb"], float)
