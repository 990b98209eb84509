"""The recipes ship with a plain (non-editable) install: build a wheel, install it
into a fresh virtual environment, check that it holds every module and recipe of the
package, then, from a temporary folder, load and build every recipe by name and run one
iteration of two of them (RHG and MAML; tests/test_recipes.py runs every recipe
in-process).

Slow-ish (a wheel build, a venv, one process building every recipe) but part of the
normal suite. The new venv sees the site-packages of the interpreter running the tests
(Jittor, numpy, pyyaml: whichever of the system Python, a ``python -m venv`` or a
``virtualenv`` that is) but its own jboat, the wheel's: the script runs from a
temporary folder, without PYTHONPATH, and checks ``jboat.__file__``.

Why not ``venv --system-site-packages``: from inside a venv that inherits the *base*
interpreter's site-packages, not the active venv's, so Jittor (installed into the venv)
is missing. Instead a ``.pth`` file in the new venv lists the running interpreter's
site directories as plain paths, after the venv's own site-packages (the wheel's jboat
comes first). Plain path lines do not run the ``.pth`` files found in those directories,
so the running interpreter's editable install of jboat (a ``.pth`` hook pointing at
this checkout) stays out of the new venv.

Jittor's kernel cache keys hold the interpreter's path (each kernel's compile command
runs Jittor's ``asm_tuner.py`` with ``sys.executable``): under the new venv's
``bin/python`` every kernel the suite already compiled would miss, be compiled again and
overwrite the cached one (then missed in turn by the next run under the running
interpreter). The script therefore sets ``sys.executable`` to the running interpreter's
(the same binary: a venv's ``python`` links to it) before Jittor is imported.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

SCRIPT = textwrap.dedent("""
    import os, sys
    site, tests, jittor_file, python = sys.argv[1:5]
    sys.executable = python               # Jittor's kernel cache keys (module docstring)
    import jboat
    import jittor
    assert os.path.realpath(jboat.__file__).startswith(os.path.realpath(site)), jboat.__file__
    # the running interpreter's Jittor (also: its compile cache, keyed by its location)
    assert os.path.realpath(jittor.__file__) == os.path.realpath(jittor_file), jittor.__file__
    sys.path.append(tests)                # the tests' tiny problems (tests/test_recipes.py)
    import test_recipes
    names = jboat.list_recipes()
    assert len(names) >= 15, names
    for name in names:
        recipe = jboat.load_config(name)
        problem, (ll_feed, ul_feed), _ = test_recipes._build(recipe, return_grad=False)
        print("built", name, flush=True)
        if name in ("rhg", "maml"):       # every recipe runs in tests/test_recipes.py
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
    """No PYTHONPATH; and Jittor in the new venv must use the python3.x-config that the
    running interpreter's Jittor uses (the new venv shares that Jittor and its compile
    cache): a venv's bin/ has none, so on its own it would take another one (/usr/bin's,
    say), and other compile flags make Jittor rebuild its shared core in ~/.cache/jittor
    and exit asking for a rerun (for the running interpreter too, the next time)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if "python_config_path" not in env:
        try:
            import jittor_utils

            config = jittor_utils.get_py3_config_path()
        except Exception:                     # an older Jittor: the base interpreter's
            base = os.path.dirname(os.path.realpath(sys.executable))
            config = os.path.join(base, f"python3.{sys.version_info.minor}-config")
        if config and os.path.isfile(config):
            env["python_config_path"] = config
    return env


def _parent_site_dirs():
    """The site directories of the interpreter running the tests, in its own order:
    its site-packages (a venv's, plus the base interpreter's under
    ``--system-site-packages``) and, where enabled, the user site."""
    import site

    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _link_parent_site(venv_site):
    """Lets the new venv import what the running interpreter has installed (a ``.pth``
    processed after the venv's own site-packages, so the wheel's jboat wins)."""
    own = os.path.realpath(venv_site)
    dirs = [d for d in _parent_site_dirs() if os.path.realpath(d) != own]
    pth = os.path.join(venv_site, "zz_parent_site_packages.pth")
    with open(pth, "w") as f:
        f.write("".join(d + "\n" for d in dirs))
    return dirs


def test_parent_site_dirs_come_after_the_venvs_own(tmp_path):
    """The ``.pth`` mechanism itself: the venv's own site-packages precede the running
    interpreter's on ``sys.path``, and no editable-install hook is carried over."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp_path).stdout.strip()
    dirs = _link_parent_site(site)
    assert dirs, "the running interpreter has no site-packages"
    out = _run([python, "-c", "import sys, importlib.util as u; print('\\n'.join(sys.path)); "
                "s = u.find_spec('jboat'); print('JBOAT', s and s.origin); "
                "print('META', *[type(f).__name__ for f in sys.meta_path])"],
               cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    *path, found, meta = out.stdout.splitlines()
    path = [os.path.realpath(p) for p in path]
    order = [path.index(os.path.realpath(d)) for d in [site] + dirs]
    assert order == sorted(order), (order, path)
    assert "Editable" not in meta, meta                 # no editable-install finder
    assert not found.split()[-1].startswith(ROOT), found  # nor this checkout's jboat


def _package_files(package_dir):
    """The modules and recipes of a ``jboat`` folder: ``.py`` files of its packages
    (folders with an ``__init__.py``) and ``configs/*.yaml``, relative paths."""
    found = set()
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(folder, package_dir)
        if rel == "configs":
            found.update(os.path.join(rel, f) for f in files if f.endswith(".yaml"))
        elif "__init__.py" in files:
            found.update(os.path.normpath(os.path.join(rel, f))
                         for f in files if f.endswith(".py"))
    return found


def test_wheel_install_ships_the_recipes(tmp_path):
    env = _environment()
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "-q", "-w", str(wheels), ROOT], cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("jboat-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q",
          str(wheel)], cwd=tmp_path, env=env)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp_path, env=env).stdout.strip()
    assert os.path.isfile(os.path.join(site, "jboat", "configs", "rhg.yaml"))
    # every module of every jboat package and every recipe, not just the ones run below
    shipped, expected = (_package_files(os.path.join(site, "jboat")),
                         _package_files(os.path.join(ROOT, "jboat")))
    assert expected - shipped == set(), f"missing from the wheel: {sorted(expected - shipped)}"
    _link_parent_site(site)
    import jittor

    script = tmp_path / "run_recipes.py"
    script.write_text(SCRIPT)
    out = _run([python, str(script), site, TESTS, jittor.__file__, sys.executable],
               cwd=tmp_path, env=env).stdout
    built = [line.split()[1] for line in out.splitlines() if line.startswith("built ")]
    ran = [line.split()[1] for line in out.splitlines() if line.startswith("ran ")]
    assert sorted(built) == sorted(os.path.basename(f)[:-5]
                                   for f in expected if f.startswith("configs")), out
    assert ran == ["maml", "rhg"], out
    assert out.strip().endswith(f"OK {len(built)}"), out
