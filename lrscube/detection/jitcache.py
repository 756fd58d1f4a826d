"""Where numba keeps lrscube's compiled kernels (``@numba.njit(cache=True)`` in running.py).

numba caches a function in the ``__pycache__`` beside its source when that folder is writable.
For an installed lrscube that is ``site-packages/lrscube/__pycache__``, and ``pip uninstall``
(or the uninstall before ``pip install -e .``) does not remove files it did not install: the
folder stays behind holding them, a namespace package named ``lrscube`` that Python finds before
setuptools' editable finder, so ``lrscube`` (the command and the package) then fails to import
(``cannot import name '__version__' from 'lrscube' (unknown location)``). So an installed lrscube
caches its kernels in the user's cache folder instead; a source checkout (editable install, or
the tests) keeps numba's default, ``lrscube/__pycache__`` in the checkout. ``NUMBA_CACHE_DIR``,
when set, is obeyed as numba obeys it.
"""

from __future__ import annotations

import site
import sysconfig
from pathlib import Path


def installed(path: str | Path) -> bool:
    """Whether ``path`` lies inside this interpreter's site-packages (system, venv or user)."""
    roots = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    try:
        roots |= set(site.getsitepackages()) | {site.getusersitepackages()}
    except AttributeError:  # site of some embedded interpreters lacks them
        pass
    p = Path(path).resolve()
    return any(p.is_relative_to(Path(r).resolve()) for r in roots if r)


def user_cache_dir() -> str:
    from numba.misc.appdirs import AppDirs

    return str(Path(AppDirs(appname="lrscube", appauthor=False).user_cache_dir) / "numba")


def configure(module_file: str) -> None:
    """Call before the kernels of ``module_file`` are decorated: an installed package caches
    them in :func:`user_cache_dir` (numba's ``config.CACHE_DIR``, which numba reads when a
    function is decorated and which holds for the whole process: other ``cache=True`` functions
    decorated later go there too, each under its source file's path), unless the user set
    ``NUMBA_CACHE_DIR``."""
    import numba

    if not numba.config.CACHE_DIR and installed(module_file):
        numba.config.CACHE_DIR = user_cache_dir()
