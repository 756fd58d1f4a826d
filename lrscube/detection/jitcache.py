"""Where numba keeps lrscube's compiled kernels (``@numba.njit(cache=True)`` in running.py).

numba caches a function in the ``__pycache__`` beside its source when that folder is writable.
For an installed lrscube that is ``site-packages/lrscube/__pycache__``, and ``pip uninstall``
(or the uninstall before ``pip install -e .``) does not remove files it did not install: the
folder stays behind holding them, a namespace package named ``lrscube`` that Python finds before
setuptools' editable finder, so ``lrscube`` (the command and the package) then fails to import
(``cannot import name '__version__' from 'lrscube' (unknown location)``). So an installed lrscube
caches its kernels in the user's cache folder instead; a source checkout (editable install, or
the tests) keeps them in ``__pycache__/numba`` beside the kernels' sources. ``NUMBA_CACHE_DIR``,
when set, is obeyed as numba obeys it.

numba keys a cached kernel on its own source file only: a kernel compiled with another file's
kernel inside it (``baseline._fit_pixels`` calls ``running.median_inplace``) would keep the old
copy after a change to that other file alone, an upgrade of lrscube included, and compute with
it silently. So the cache folder is named by a digest of every source in the detection package
(:func:`kernels_digest`): any change starts a fresh cache.
"""

from __future__ import annotations

import hashlib
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


def kernels_digest(folder: str | Path) -> str:
    """A digest of the Python sources in ``folder`` (names and bytes)."""
    h = hashlib.blake2b(digest_size=8)
    for p in sorted(Path(folder).glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def configure(module_file: str) -> None:
    """Call before the kernels of ``module_file`` are decorated: they are cached under a folder
    named by :func:`kernels_digest` of their package, in :func:`user_cache_dir` for an installed
    package, else in ``__pycache__/numba`` beside the sources (numba's ``config.CACHE_DIR``,
    which numba reads when a function is decorated and which holds for the whole process: other
    ``cache=True`` functions decorated later go there too, each under its source file's path),
    unless the user set ``NUMBA_CACHE_DIR``."""
    import numba

    if numba.config.CACHE_DIR:
        return
    here = Path(module_file).resolve().parent
    base = Path(user_cache_dir()) if installed(module_file) else here / "__pycache__" / "numba"
    numba.config.CACHE_DIR = str(base / kernels_digest(here))
