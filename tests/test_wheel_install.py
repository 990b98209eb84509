"""The recipes ship with a plain (non-editable) install: build a wheel, install it
into a fresh virtual environment, load every recipe by name and run one iteration.

Slow-ish (a wheel build, a venv, one process running every recipe) but part of the
normal suite. The venv sees the system site-packages (Jittor, numpy, pyyaml, pytest)
but its own jboat, the wheel's: the script runs from a temporary folder, without
PYTHONPATH, and checks ``jboat.__file__``.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

SCRIPT = textwrap.dedent("""
    import os, sys
    import jboat
    site = sys.argv[1]
    assert os.path.realpath(jboat.__file__).startswith(os.path.realpath(site)), jboat.__file__
    sys.path.append(sys.argv[2])          # the tests' tiny problems (tests/test_recipes.py)
    import test_recipes
    names = jboat.list_recipes()
    assert len(names) >= 15, names
    for name in names:
        recipe = jboat.load_config(name)
        problem, (ll_feed, ul_feed), _ = test_recipes._build(recipe, return_grad=False)
        problem.run_iter(ll_feed, ul_feed, 0)
        print("ran", name, flush=True)
    try:
        jboat.load_config("no_such_recipe")
    except FileNotFoundError as exc:
        assert "rhg" in str(exc) and "maml" in str(exc), exc
    else:
        raise AssertionError("unknown recipe name accepted")
    print("OK", len(names))
""")


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n"
                                    f"{result.stderr[-3000:]}")
    return result


def _environment():
    """No PYTHONPATH; and Jittor must find this interpreter's python3.x-config, not
    fall back to /usr/bin's from inside the venv: other compile flags would make it
    rebuild its shared core in ~/.cache/jittor (and exit asking for a rerun)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base = os.path.dirname(os.path.realpath(sys.executable))
    config = os.path.join(base, f"python3.{sys.version_info.minor}-config")
    if "python_config_path" not in env and os.path.isfile(config):
        env["python_config_path"] = config
    return env


def test_wheel_install_ships_the_recipes(tmp_path):
    env = _environment()
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "-q", "-w", str(wheels), ROOT], cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("jboat-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
         cwd=tmp_path, env=env)
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q",
          str(wheel)], cwd=tmp_path, env=env)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp_path, env=env).stdout.strip()
    assert os.path.isfile(os.path.join(site, "jboat", "configs", "rhg.yaml"))
    script = tmp_path / "run_recipes.py"
    script.write_text(SCRIPT)
    out = _run([python, str(script), site, TESTS], cwd=tmp_path, env=env).stdout
    assert out.strip().endswith(f"OK {len(out.split('ran ')) - 1}"), out
