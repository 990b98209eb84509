"""The example scripts run end to end (in-process, tiny sizes) and return sane metrics."""

import gzip
import math
import os
import pickle
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
# tiny search network: C=2, 3 cells (normal, reduction, reduction), 2 steps, 16x16, batch 2
TINY_DARTS = ["--iters", "2", "--channels", "2", "--layers", "3", "--steps", "2",
              "--image-size", "16", "--batch-size", "2", "--n-train", "8", "--n-val", "6",
              "--quiet"]


def _check_darts_metrics(metrics, iters=2, steps=2):
    assert len(metrics["lower_losses"]) == len(metrics["upper_losses"]) == iters
    for loss in metrics["lower_losses"] + metrics["upper_losses"] + [metrics["val_loss"]]:
        assert _is_finite_float(loss) and loss > 0.0
    assert _is_fraction(metrics["val_accuracy"])
    assert _is_finite_float(metrics["seconds_per_iter"]) and metrics["seconds_per_iter"] > 0
    for cell in ("normal", "reduce"):
        chosen = metrics["genotype"][cell]
        assert len(chosen) == 2 * steps, chosen
        for node in range(steps):
            inputs = [src for _, src in chosen[2 * node:2 * node + 2]]
            assert len(set(inputs)) == 2 and all(0 <= src < node + 2 for src in inputs)
        assert all(op in nas_darts.PRIMITIVES and op != "none" for op, _ in chosen)
        final = np.asarray(metrics["alphas"][cell])
        initial = np.asarray(metrics["initial_alphas"][cell])
        assert final.shape == (metrics["edges"], len(nas_darts.PRIMITIVES))
        assert np.all(np.isfinite(final))
        assert np.abs(final - initial).max() > 1e-6, f"{cell} logits did not move"


@pytest.mark.parametrize("recipe", sorted(nas_darts.RECIPES))
def test_nas_darts_smoke(recipe):
    metrics = nas_darts.main(TINY_DARTS + ["--recipe", recipe])
    assert metrics["recipe"] == recipe
    assert metrics["edges"] == 5
    _check_darts_metrics(metrics)


def _write_cifar_batch(path, n, rng):
    batch = {b"data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8),
             b"labels": [int(v) for v in rng.randint(0, 10, size=n)]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)


def test_nas_darts_reads_cifar_pickles_and_plots(tmp_path):
    rng = np.random.RandomState(0)
    for k in (1, 2):   # 8 + 8 images; the search takes 14, so both files are read
        _write_cifar_batch(tmp_path / f"data_batch_{k}", 8, rng)
    x, y = nas_darts.load_cifar10(str(tmp_path), 12, 16)
    assert x.shape == (12, 3, 16, 16) and x.dtype == np.float32 and y.shape == (12,)
    assert 0.0 <= x.min() <= x.max() <= 1.0
    argv = TINY_DARTS + ["--recipe", "first-order", "--data-dir", str(tmp_path)]
    try:
        import matplotlib  # noqa: F401
        path = tmp_path / "alphas.png"
        argv += ["--plot", str(path)]
    except ImportError:
        path = None
    metrics = nas_darts.main(argv)
    assert "CIFAR-10" in metrics["data"]
    _check_darts_metrics(metrics)
    if path is not None:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="asked for 100 images"):
        nas_darts.load_cifar10(str(tmp_path), 100, 16)


def test_nas_darts_cifar_loader_names_the_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="data_batch_1"):
        nas_darts.load_cifar10(str(tmp_path), 4, 16)


def test_nas_darts_offline_images(monkeypatch, capsys):
    x, y, source = nas_darts.load_offline(16, seed=0)
    assert x.shape == (len(y), 3, 16, 16) and x.dtype == np.float32 and len(y) >= 1000
    assert 0.0 <= x.min() <= x.max() <= 1.0 and x.std(axis=(0, 2, 3)).min() > 0.05

    def missing():
        raise ImportError("No module named 'sklearn'")

    monkeypatch.setattr(nas_darts, "load_digits", missing)
    x, y, source = nas_darts.load_offline(16, seed=0)
    assert "synthetic" in source and x.shape[1:] == (3, 16, 16)
    assert "scikit-learn is not installed" in capsys.readouterr().err


def test_nas_darts_resize_and_genotype_format():
    images = np.random.RandomState(0).rand(2, 3, 32, 32).astype(np.float32)
    small = nas_darts.resize(images, 16)
    assert small.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(small.mean(), images.mean(), atol=0.02)
    np.testing.assert_allclose(nas_darts.resize(np.ones((1, 1, 8, 8), np.float32), 12), 1.0,
                               rtol=1e-6)
    cell = [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 0)]
    assert nas_darts.format_genotype(cell, 2) == [
        "  node 2: sep_conv_3x3(0) + skip_connect(1)",
        "  node 3: dil_conv_5x5(2) + max_pool_3x3(0)"]
    assert nas_darts.edge_names(2) == ["0->2", "1->2", "0->3", "1->3", "2->3"]


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
