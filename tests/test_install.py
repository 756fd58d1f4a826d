"""An installed lrscube leaves nothing of its own in site-packages (lrscube/detection/jitcache.py): files
there that pip did not install outlive `pip uninstall`, and the folder holding them then shadows
a later editable install (`pip install .`, `lrscube demo`, then `pip install -e .`, as the
README's two commands run in one folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lrscube.detection import jitcache

PACKAGE = Path(__file__).resolve().parents[1] / "lrscube"


def test_site_packages_is_installed_and_a_checkout_is_not():
    import sysconfig

    assert jitcache.installed(Path(sysconfig.get_path("purelib")) / "lrscube" / "detection" / "running.py")
    assert not jitcache.installed(PACKAGE / "detection" / "running.py")


@pytest.mark.slow
def test_kernels_of_an_installed_copy_are_cached_outside_it(tmp_path):
    """A copy of the package in a user site-packages folder (PYTHONUSERBASE), compiled in a fresh
    process: numba's cache goes to the user's cache folder, the package folder gets nothing;
    NUMBA_CACHE_DIR, when set, wins."""
    base = tmp_path / "userbase"
    env = {**os.environ, "PYTHONUSERBASE": str(base), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    usersite = subprocess.run([sys.executable, "-c", "import site; print(site.getusersitepackages())"],
                              env=env, capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(PACKAGE, Path(usersite) / "lrscube", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import numpy as np, lrscube.detection.running as r, numba\n"
            "assert r.__file__.startswith(%r), r.__file__\n"
            "r.running_mean(np.ones((9, 4), np.float32), 3, 0)\n"
            "print(numba.config.CACHE_DIR)" % usersite)
    env["PYTHONPATH"] = usersite  # importable although a venv leaves the user site off sys.path
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    digest = jitcache.kernels_digest(PACKAGE / "detection")
    assert out.stdout.strip() == str(tmp_path / "cache" / "lrscube" / "numba" / digest)
    cached = list((tmp_path / "cache" / "lrscube" / "numba").rglob("*.nbi"))
    assert cached and all("running" in p.name for p in cached)
    assert not (Path(usersite) / "lrscube" / "__pycache__").exists() or not any(
        p.suffix in (".nbi", ".nbc") for p in (Path(usersite) / "lrscube" / "__pycache__").iterdir())

    # the user's NUMBA_CACHE_DIR is obeyed
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "mine") and list((tmp_path / "mine").rglob("*.nbi"))


def test_a_change_to_any_kernel_source_starts_a_fresh_cache(tmp_path):
    """numba keys a cached kernel on its own file; a kernel compiled with another file's inside
    it must not outlive a change to that file (an upgrade): the cache folder follows every source."""
    for p in (PACKAGE / "detection").glob("*.py"):
        shutil.copy(p, tmp_path / p.name)
    before = jitcache.kernels_digest(tmp_path)
    assert jitcache.kernels_digest(PACKAGE / "detection") == before
    running = tmp_path / "running.py"
    running.write_text(running.read_text() + "\n# a change to one kernel file\n")
    assert jitcache.kernels_digest(tmp_path) != before
    (tmp_path / "running.py").write_text((PACKAGE / "detection" / "running.py").read_text())
    assert jitcache.kernels_digest(tmp_path) == before
