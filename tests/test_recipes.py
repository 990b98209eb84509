"""Every solver recipe in configs/ loads, builds a Problem and runs one iteration.

Each recipe runs on a tiny problem that suits it:

* ``accumulate_grad`` recipes (MAML, FOMAML, iMAML): meta-learning with the UL model
  equal to the LL model and lists of per-task feeds (tests/na_ol/na_problems.py); an
  implicit one without IAD (``imaml_implicit``: iMAML proper) gets iMAML's proximal term
  in the LL loss and must equal iMAML's closed form;
* everything else, including the first-order ``fo_op`` recipes: the quadratic problem of
  tests/quadratic.py (GDA recipes get its ``gda_loss``; GAFFO, which needs UL and LL
  variables of the same shapes, a square variant; FO recipes an LL loss shifted by a
  constant, as VSO's log-barrier needs f > 0).

Checked: this iteration's UL gradient (``return_grad``) is finite and non-zero, and a
normal iteration (UL step) moves the UL variables and keeps them finite. Recipes whose
hyper-gradient estimates dF(x, y(x))/dx on the quadratic must point along the exact
unrolled hyper-gradient (cosine > 0.9; at the PTT step, after the RGT truncation).
"""

import glob
import os

import numpy as np
import pytest

import jboat
import quadratic
from quadratic import Quadratic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
#: iMAML's proximal strength for the implicit meta-learning recipes
IMAML_PROXIMAL = 2.0


def _operators(recipe):
    names = list(recipe.get("gm_op") or []) + list(recipe.get("na_op") or [])
    if recipe.get("fo_op"):
        names.append(recipe["fo_op"])
    return [n.upper() for n in names]


def _unregistered(recipe):
    return [n for n in _operators(recipe) if n not in jboat.Operation_REGISTRY]


def _shifted_lower_loss(feed, upper_model, lower_model, **kwargs):
    return quadratic.lower_loss(feed, upper_model, lower_model, **kwargs) + 10.0


def _build(recipe, **extra):
    """(problem, feeds, oracle) for ``recipe`` on its tiny problem."""
    options = dict(recipe, track_losses=False, **extra)
    if options.get("accumulate_grad"):
        from na_ol.na_problems import MetaRegression

        meta = MetaRegression(tasks=2)
        options.pop("accumulate_grad")
        gm_op, na_op = options.pop("gm_op"), options.pop("na_op")
        lower_iters = options.pop("lower_iters", 3)
        names = [n.upper() for n in na_op]
        implicit = "IAD" not in names and {"CG", "NS"} & set(names)
        proximal = IMAML_PROXIMAL if implicit else 0.0
        problem = meta.build(gm_op, na_op, lower_iters=lower_iters, proximal=proximal,
                             **options)
        oracle = meta.imaml_gradient(lower_iters, proximal) if implicit else None
        return problem, meta.feeds(), oracle
    square = recipe.get("fo_op") == "GAFFO"
    q = Quadratic(n=4, m=4) if square else Quadratic()
    gm_op, na_op = options.pop("gm_op", None), options.pop("na_op", None)
    lower_iters = options.pop("lower_iters", 10)
    if recipe.get("fo_op"):
        # VSO's log-barrier needs f > 0; a constant shift changes no gradient
        options["losses"] = {"lower_level_loss": _shifted_lower_loss,
                             "upper_level_loss": quadratic.upper_loss}
    problem = q.build(gm_op, na_op, lower_iters=lower_iters, **options)
    return problem, (q.ll_feed(), q.ul_feed()), _oracle(q, recipe, lower_iters)


def _oracle(q, recipe, lower_iters):
    """The exact (unrolled) hyper-gradient the recipe estimates on the quadratic, or None.

    None for first-order recipes, DM (its first UL gradient is F_x, the multiplier
    starting at zero) and IGA (a one-direction surrogate with no direction guarantee).
    """
    na_op = [n.upper() for n in recipe.get("na_op") or []]
    gm_op = [n.upper() for n in recipe.get("gm_op") or []]
    if not gm_op or "DM" in gm_op or "IGA" in na_op:
        return None
    start = (recipe.get("RGT") or {}).get("truncate_iter", 0) if "RGT" in na_op else 0
    select = None
    if "PTT" in na_op:
        ys = q.trajectory(q.x0, q.y0, lower_iters)
        select = 1 + int(np.argmax([q.F(q.x0, y) for y in ys[1:]]))
    return q.unrolled_hypergradient(q.x0, q.y0, lower_iters, start=start, select=select)
    return problem, (q.ll_feed(), q.ul_feed()), oracle


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_builds_and_runs_one_iteration(path):
    recipe = jboat.load_config(path)
    missing = _unregistered(recipe)
    assert not missing, (f"{os.path.basename(path)} uses operator(s) {missing} that are not "
                         f"registered (jboat.Operation_REGISTRY)")

    problem, (ll_feed, ul_feed), oracle = _build(recipe, return_grad=True)
    grads, _ = problem.run_iter(ll_feed, ul_feed, 0)
    g = np.concatenate([v.numpy().ravel() for v in grads])
    assert np.all(np.isfinite(g))
    assert np.linalg.norm(g) > 0
    if oracle is not None:
        cosine = g @ oracle / (np.linalg.norm(g) * np.linalg.norm(oracle))
        assert cosine > 0.9, f"hyper-gradient direction off: cosine {cosine:.3f}"
    if oracle is not None and recipe.get("accumulate_grad"):
        # iMAML: CG with k >= dim is exact on the quadratic tasks, so the value too
        np.testing.assert_allclose(g, oracle, rtol=1e-4, atol=1e-6)

    problem, (ll_feed, ul_feed), _ = _build(recipe, return_grad=False)
    before = [v.numpy().copy() for v in problem._ul_var]
    problem.run_iter(ll_feed, ul_feed, 0)
    after = [v.numpy() for v in problem._ul_var]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.allclose(a, b) for a, b in zip(after, before)), "the UL step did nothing"


def test_every_operator_has_a_recipe():
    covered = set()
    for path in RECIPES:
        covered.update(_operators(jboat.load_config(path)))
    registered = {name for name, cls in jboat.Operation_REGISTRY.items()
                  if getattr(cls, "role", None) in ("gm", "na", "fo")}
    assert registered - covered == set(), "operators without a recipe in configs/"


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_has_a_comment_header(path):
    with open(path, encoding="utf-8") as handle:
        header = [line for line in handle if line.startswith("#")]
    assert header, f"{os.path.basename(path)} has no comment header"
