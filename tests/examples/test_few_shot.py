"""examples/few_shot.py runs end to end (in-process, tiny Conv4) and its data loaders
give what the docstring promises."""

import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import few_shot  # noqa: E402

TINY = ["--iters", "2", "--channels", "4", "--ways", "3", "--query", "2",
        "--meta-batch", "2", "--eval-tasks", "2", "--eval-query", "2",
        "--baseline-steps", "2", "--quiet"]


def _fake_dir(folder, shape, dtype):
    rng = np.random.RandomState(0)
    for part, classes in (("train", 5), ("test", 4)):
        array = rng.randint(0, 256, size=(classes, 6) + shape)
        np.save(os.path.join(folder, part + ".npy"), array.astype(dtype))
    return str(folder)


@pytest.mark.parametrize("config,adapt", [("maml.yaml", "all"), ("fomaml.yaml", "all"),
                                          ("maml.yaml", "head"), ("imaml.yaml", "all"),
                                          ("imaml_implicit.yaml", "all")],
                         ids=["maml", "fomaml", "anil", "imaml", "imaml-implicit"])
def test_few_shot_smoke(tmp_path, config, adapt):
    data = _fake_dir(tmp_path, (24, 24), np.uint8)
    metrics = few_shot.main(TINY + ["--config", os.path.join(ROOT, "configs", config),
                                    "--adapt", adapt, "--data-dir", data])
    for key in ("meta_test_accuracy", "random_init_accuracy", "pretrained_baseline_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert math.isfinite(metrics["final_train_query_loss"])
    assert metrics["adapt"] == adapt
    assert metrics["adaptation_steps"] == 5                  # the recipes' lower_iters
    assert (metrics["proximal"] > 0) == config.startswith("imaml")


def test_anil_adapts_only_the_head():
    """With --adapt head the meta-test adaptation leaves the conv layers unchanged."""
    import jittor as jt

    model = few_shot.Conv4(3, channels=4, image_size=24)
    init = few_shot.snapshot(few_shot.trainable(model))
    rng = np.random.RandomState(0)
    feed = {"x": jt.array(rng.rand(6, 1, 24, 24).astype(np.float32)),
            "y": jt.array(np.array([0, 1, 2, 0, 1, 2], np.int32))}
    few_shot.adapted_accuracy(model, init, (feed, feed), 2, 0.5, head_only=True)
    after = few_shot.snapshot(few_shot.trainable(model))
    heads = {id(p) for p in few_shot.head_parameters(model)}
    for p, a, b in zip(few_shot.trainable(model), init, after):
        assert np.array_equal(a, b) != (id(p) in heads)


def test_digit_classes():
    pytest.importorskip("sklearn")
    train, test = few_shot.digits_split()
    # 0, 1, 8 keep 2 rotations, the other digits 4: 0-6 -> 2+2+5*4, 7-9 -> 4+2+4
    assert (len(train), len(test)) == (24, 10)
    assert all(c.shape[1:] == (1, 28, 28) and c.dtype == np.float32 for c in train + test)
    assert 0.0 <= min(c.min() for c in train) and max(c.max() for c in train) <= 1.0
    classes = few_shot.digit_classes()
    np.testing.assert_array_equal(classes[(3, 1)], np.rot90(classes[(3, 0)], 1, axes=(2, 3)))


def test_interpolation_preserves_constants_and_mass_centre():
    m = few_shot._interpolation_matrix(8, 28)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    ramp = np.arange(8, dtype=np.float32)
    up = m @ ramp
    assert np.all(np.diff(up) >= 0) and up[0] == 0.0 and up[-1] == 7.0


def test_data_dir_formats(tmp_path):
    grey = few_shot.load_data_dir(_fake_dir(tmp_path, (24, 24), np.uint8))
    assert grey[0][0].shape == (6, 1, 24, 24) and grey[0][0].max() <= 1.0
    assert (len(grey[0]), len(grey[1])) == (5, 4)
    colour = tmp_path / "colour"
    colour.mkdir()
    rgb = few_shot.load_data_dir(_fake_dir(colour, (24, 24, 3), np.float32))
    assert rgb[1][0].shape == (6, 3, 24, 24)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "train.npy", np.zeros((2, 3, 24)))
    with pytest.raises(SystemExit, match="expected shape"):
        few_shot.load_data_dir(str(bad))


def test_task_sampler_refuses_small_pools():
    pool = [np.zeros((3, 1, 24, 24), np.float32)] * 4
    with pytest.raises(SystemExit, match="5-way"):
        few_shot.TaskSampler(pool, 5, 1, 2, 0)
