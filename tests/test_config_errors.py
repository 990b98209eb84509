"""Bad input is refused at build time with an error that says what to change."""

import copy
import json

import pytest

import jboat
from jboat.errors import ConfigError, ConfigTypeError, MissingConfigKeyError, UnknownOperatorError
from quadratic import Quadratic, lower_loss, upper_loss


@pytest.fixture
def q():
    return Quadratic()


def test_unknown_operator_lists_valid_names(q):
    with pytest.raises(UnknownOperatorError, match=r"Unknown na_op operator 'RADD'.*Did you mean 'RAD'.*Valid na_op names: .*RAD"):
        q.build(["NGD"], ["RADD"])


def test_operator_of_the_wrong_family(q):
    with pytest.raises(UnknownOperatorError, match="'NGD' is a gm_op operator and cannot appear in na_op"):
        q.build(["NGD"], ["NGD"])


def test_gm_op_without_ngd_or_dm(q):
    with pytest.raises(ConfigError, match=r"no operator that runs the lower-level loop; add one of .*NGD"):
        q.build(["GDA"], ["RAD"])


def test_two_terminal_na_operators(q):
    with pytest.raises(ConfigError, match=r"not a valid chain; pick exactly one of"):
        q.build(["NGD"], ["RAD", "IAD"])


def test_missing_loss_function(q):
    with pytest.raises(MissingConfigKeyError, match="loss_config lacks upper_level_loss"):
        q.build(losses={"lower_level_loss": lower_loss})
    with pytest.raises(KeyError):   # also a KeyError, as upstream raised
        q.build(losses={"lower_level_loss": lower_loss})


def test_missing_gda_loss_names_gda(q):
    with pytest.raises(MissingConfigKeyError, match="gda_loss.*GDA"):
        q.build(["GDA", "NGD"], ["RAD"], losses={"lower_level_loss": lower_loss,
                                                  "upper_level_loss": upper_loss})


def test_bad_dotted_loss_path(q):
    with pytest.raises(ConfigError, match="Cannot import module 'no_such_module'"):
        q.build(losses={"lower_level_loss": {"function": "no_such_module.f"},
                        "upper_level_loss": upper_loss})
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        q.build(losses={"lower_level_loss": {"function": "quadratic.nope"},
                        "upper_level_loss": upper_loss})


def test_dotted_loss_path_with_params(q):
    problem = q.build(losses={"lower_level_loss": {"function": "quadratic.lower_loss", "params": {}},
                              "upper_level_loss": {"function": "quadratic.upper_loss"}},
                      return_grad=True)
    grads, _ = problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    assert grads[0].shape == [3]


def test_wrong_type_for_numeric_option(q):
    with pytest.raises(ConfigTypeError, match=r"lower_iters must be an integer, got '5'"):
        q.build(lower_iters="5")
    with pytest.raises(TypeError):
        q.build(["GDA", "NGD"], ["RAD"], GDA={"alpha_init": "0.5", "alpha_decay": 0.9})


def test_out_of_range_and_unknown_options(q):
    with pytest.raises(ConfigError, match=r"GDA.alpha_init must be > 0.0 and < 1.0"):
        q.build(["GDA", "NGD"], ["RAD"], GDA={"alpha_init": 1.5})
    with pytest.raises(ConfigError, match=r"Unknown option\(s\) alpha in 'GDA'; valid options: alpha_decay, alpha_init"):
        q.build(["GDA", "NGD"], ["RAD"], GDA={"alpha": 0.5})
    with pytest.raises(ConfigError, match=r"Unknown solver config key\(s\): lower_iter\b"):
        q.build(lower_iter=3)
    with pytest.raises(ConfigError, match="lower_iters must be >= 1"):
        q.build(lower_iters=0)


def test_missing_runtime_object(q):
    q.build()
    config = {"gm_op": ["NGD"], "na_op": ["RAD"], "lower_level_model": q.lower}
    with pytest.raises(MissingConfigKeyError, match="lacks upper_level_model"):
        jboat.Problem(config, {"lower_level_loss": lower_loss, "upper_level_loss": upper_loss})


def test_options_of_unselected_operators_not_required_and_caller_dict_untouched(q):
    problem = q.build()
    config = dict(problem.boat_configs)
    for key in ("GDA", "CG", "gda_loss", "lower_iters"):
        config.pop(key, None)
    config["DM"] = {"anything": "is not read"}       # unselected: not validated
    before = copy.copy(config)
    problem = jboat.Problem(config, {"lower_level_loss": lower_loss, "upper_level_loss": upper_loss})
    assert config == before and "GDA" not in config
    assert problem.boat_configs["lower_iters"] == 10


def test_names_are_normalised(q):
    problem = q.build(["ngd"], ["rad"])
    assert problem.boat_configs["gm_op"] == ["NGD"] and problem.boat_configs["na_op"] == ["RAD"]


def test_fo_op_wins_over_gm_op_and_na_op(q, caplog):
    """Upstream's scripts pass gm_op/na_op beside fo_op and JBOAT ignores them: so
    does jboat, with one warning naming the ignored keys (even invalid names)."""
    with caplog.at_level("WARNING", logger="jboat"):
        problem = q.build(["DI", "GDA", "NGD"], ["CG"], fo_op="PGDO")
    warnings = [r.getMessage() for r in caplog.records if "fo_op" in r.getMessage()]
    assert len(warnings) == 1
    assert "gm_op: ['DI', 'GDA', 'NGD']" in warnings[0] and "na_op: ['CG']" in warnings[0]
    cfg = problem.boat_configs
    assert cfg["fo_op"] == "PGDO" and cfg["gm_op"] is None and cfg["na_op"] is None
    assert problem._fo_op_solver is not None and problem._ll_solver is None
    problem.run_iter(q.ll_feed(), q.ul_feed(), 0)
    caplog.clear()
    with caplog.at_level("WARNING", logger="jboat"):
        q.build(None, None, fo_op="VSO")
    assert not [r for r in caplog.records if "fo_op" in r.getMessage()]


def test_run_iter_before_build(q):
    problem = q.build()
    problem._ll_solver = None
    with pytest.raises(ConfigError, match="build_ll_solver"):
        problem.run_iter(q.ll_feed(), q.ul_feed(), 0)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("gm_op: [NGD\nna_op: [RAD]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+"):
        jboat.load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must contain a mapping"):
        jboat.load_config(path)


def test_yaml_and_json_load(tmp_path):
    yml = tmp_path / "r.yaml"
    yml.write_text("gm_op: [NGD]\nna_op: [CG]\nCG: {k: 5, tolerance: 1e-6}\n")
    data = jboat.load_config(yml)
    assert data["CG"]["tolerance"] == 1e-6 and isinstance(data["CG"]["tolerance"], float)
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"gm_op": ["NGD"], "na_op": ["RAD"]}))
    assert jboat.load_config(js) == {"gm_op": ["NGD"], "na_op": ["RAD"]}
    bad = tmp_path / "b.json"
    bad.write_text("{\"gm_op\": [}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        jboat.load_config(bad)


def test_registry_lookup_error_lists_names():
    with pytest.raises(ValueError, match="Class 'Nope' is not registered. Registered classes: .*NGD"):
        jboat.get_registered_operation("Nope")
    from jboat.operation_registry import HyperGradientRules, validate_and_adjust_order
    assert validate_and_adjust_order(["op1", "op3", "op2", "op1"],
                                     [["op1", "op2"], ["op3"]]) == ["op1", "op2", "op3"]
    # a name in no group is an error, not silently dropped
    with pytest.raises(UnknownOperatorError, match="x not found in the execution order"):
        validate_and_adjust_order(["op1", "x"], [["op1", "op2"], ["op3"]])
    with pytest.raises(ValueError, match="list of lists"):
        HyperGradientRules.set_gradient_order(["PTT"])


def test_device_cuda_is_refused_where_cuda_kernels_compute_wrong_values(monkeypatch):
    """Jittor 1.3.11 on CUDA 13 runs its kernels without an error and returns wrong values;
    device: cuda must refuse such a machine rather than train on garbage."""
    import jittor as jt
    from jboat import boat_opt
    from quadratic import Quadratic

    monkeypatch.setattr(jt, "has_cuda", 1)
    monkeypatch.setattr(boat_opt, "_CUDA_CHECKED", {"ok": False})
    before = jt.flags.use_cuda
    with pytest.raises(jboat.ConfigError, match="wrong values.*CUDA 12"):
        Quadratic().build(["NGD"], ["RAD"], device="cuda")
    assert jt.flags.use_cuda == before == 0


@pytest.mark.cuda
def test_cuda_kernels_compute_right_values_on_this_gpu():
    from jboat import boat_opt

    assert boat_opt.cuda_computes()
