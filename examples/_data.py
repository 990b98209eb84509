"""Small data helpers of the examples: nothing is downloaded.

* ``load_classification(source, ...)``: scikit-learn's bundled 8x8 digits (optional
  extra ``jboat[examples]``), MNIST / Fashion-MNIST idx files the user already has
  (``--mnist-dir``), or a synthetic Gaussian-blob problem (always available).
* ``split``, ``corrupt_labels``, ``to_feed``: splitting, label noise, Jittor feeds.
"""

import gzip
import os
import struct
import sys

import numpy as np

__all__ = ["load_classification", "load_digits", "load_mnist_idx", "synthetic_classification",
           "split", "corrupt_labels", "to_feed", "one_hot", "MNIST_FILES"]

#: idx file stems of MNIST and Fashion-MNIST (the same names for both), per split
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_digits():
    """scikit-learn's bundled digits: 1797 images 8x8, 10 classes, pixels in [0, 1].

    Raises:
        ImportError: scikit-learn is not installed.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    return data.data.astype(np.float32) / 16.0, data.target.astype(np.int32)


def synthetic_classification(seed, n=1800, features=64, classes=10, informative=16,
                             separation=1.5):
    """Gaussian blobs: ``informative`` class-dependent features plus noise features.

    Returns:
        ``(x, y)``: float32 ``(n, features)`` and int32 ``(n,)``.
    """
    rng = np.random.RandomState(10007 + seed)
    centers = rng.randn(classes, informative) * separation
    y = rng.randint(classes, size=n)
    x = np.concatenate([centers[y] + rng.randn(n, informative),
                        rng.randn(n, features - informative)], axis=1)
    return x.astype(np.float32), y.astype(np.int32)


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an idx file (bad magic number).")
    type_code, ndim = data[2], data[3]
    if type_code != 0x08:
        raise ValueError(f"{path}: only unsigned-byte idx files are supported, got type "
                         f"code 0x{type_code:02x}.")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds "
                         f"{body.size} values (truncated download?).")
    return body.reshape(shape)


def _find_idx(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"No {stem} (or {stem}.gz) in {directory}. Point --mnist-dir at the folder "
        f"holding the MNIST or Fashion-MNIST idx files ({', '.join(MNIST_FILES['train'])}"
        f", optionally gzipped).")


def load_mnist_idx(directory, part="train"):
    """MNIST or Fashion-MNIST from local idx files (raw or gzipped).

    Args:
        directory: folder with ``train-images-idx3-ubyte[.gz]`` etc.
        part: ``"train"`` or ``"test"``.

    Returns:
        ``(x, y)``: float32 ``(n, 784)`` in [0, 1] and int32 ``(n,)``.
    """
    images, labels = (_read_idx(_find_idx(directory, stem)) for stem in MNIST_FILES[part])
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{directory}: {images.shape[0]} images but {labels.shape[0]} labels.")
    return (images.reshape(images.shape[0], -1).astype(np.float32) / 255.0,
            labels.astype(np.int32))


def load_classification(source="digits", seed=0, mnist_dir=None, quiet=False):
    """The examples' classification data, as ``(x, y, description)``.

    ``source="digits"`` falls back to the synthetic problem, with a message, when
    scikit-learn is missing; ``mnist_dir`` (when given) wins over ``source`` and
    concatenates the train and test idx files (the caller splits).
    """
    if mnist_dir:
        x, y = load_mnist_idx(mnist_dir, "train")
        try:
            xt, yt = load_mnist_idx(mnist_dir, "test")
            x, y = np.concatenate([x, xt]), np.concatenate([y, yt])
        except FileNotFoundError:
            pass
        return x, y, f"idx files in {mnist_dir}"
    if source == "digits":
        try:
            x, y = load_digits()
            return x, y, "scikit-learn digits"
        except ImportError:
            if not quiet:
                print("scikit-learn is not installed, so the bundled digits data set is not "
                      "available: using a synthetic data set instead "
                      "(pip install 'jboat[examples]' for the digits).", file=sys.stderr)
    elif source != "synthetic":
        raise SystemExit(f"unknown data source {source!r}; use digits or synthetic.")
    x, y = synthetic_classification(seed)
    return x, y, "synthetic Gaussian blobs"


def split(x, y, sizes, seed):
    """Shuffle and cut ``(x, y)`` into parts of the given sizes (None = the rest)."""
    order = np.random.RandomState(seed).permutation(len(y))
    fixed = sum(s for s in sizes if s is not None)
    if fixed > len(y):
        raise SystemExit(f"asked for {fixed} samples but the data set has {len(y)}; "
                         f"lower the split sizes.")
    parts, start = [], 0
    for size in sizes:
        stop = len(y) if size is None else start + size
        idx = order[start:stop]
        parts.append((x[idx], y[idx]))
        start = stop
    return parts


def corrupt_labels(y, fraction, classes, seed):
    """Replace a ``fraction`` of the labels by a different, uniformly drawn class.

    Returns:
        ``(noisy_labels, corrupted_mask)``.
    """
    rng = np.random.RandomState(seed + 7919)
    mask = np.zeros(len(y), dtype=bool)
    mask[rng.permutation(len(y))[:int(round(fraction * len(y)))]] = True
    noisy = y.copy()
    shift = rng.randint(1, classes, size=len(y))
    noisy[mask] = (y[mask] + shift[mask]) % classes
    return noisy.astype(np.int32), mask


def one_hot(y, classes):
    out = np.zeros((len(y), classes), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def to_feed(x, y, classes):
    """Jittor feed dict ``{"x", "y", "onehot"}``."""
    import jittor as jt

    return {"x": jt.array(x.astype(np.float32)), "y": jt.array(y.astype(np.int32)),
            "onehot": jt.array(one_hot(y, classes))}
