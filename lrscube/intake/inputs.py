"""Which files a list of inputs names: the one rule ``ingest`` and ``apply`` share.

:func:`expand` takes files, directories and globs (local paths or fsspec URLs)::

    a file          itself, whatever its name: reading it decides what it is
    a directory     every FITS file under it, at any depth: names ending .fits, .fits.gz,
                    .fit or .fts (any case) and, on a local disk, any other file that starts
                    with a FITS header; other files (notes, tables) are passed over
    a glob          the files it matches (``*``, ``?``, ``[...]``; ``**`` for any depth);
                    a directory it matches counts as a directory

Whether a FITS file is an exposure is judged by its content when it is read (a reference file,
a spectrum or a raw ramp is rejected with its reason), not by its name. Symbolic links to
directories are followed, but each real directory is read once, so a link back up the tree (a
loop) ends the descent instead of repeating it forever. An input that names nothing, or a
directory that cannot be listed, is returned as a problem ``(input, reason)``.
"""

from __future__ import annotations

import glob as globmod
import os
import re
from dataclasses import dataclass, field

from ..storage import store as st

#: names of FITS files (compared in lower case)
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
#: the first bytes of every FITS file (the primary header's first card)
FITS_SIGNATURE = b"SIMPLE  ="
#: JWST product names: these sort first, so a renamed copy of one is the duplicate, not it
_JWST_NAME = re.compile(r"^jw\d{11}_\d{5}_\d{5}_[a-z0-9]+_[a-z0-9]+\.fits(\.gz)?$")
_MAGIC = re.compile(r"[*?\[]")


@dataclass
class Inputs:
    files: list[str] = field(default_factory=list)
    #: (input as given, why it gave no file)
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: the files named one by one (not found in a directory or by a pattern)
    named: set[str] = field(default_factory=set)

    def __iter__(self):  # files, problems = expand(...)
        return iter((self.files, self.problems))


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def _starts_like_fits(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(FITS_SIGNATURE)) == FITS_SIGNATURE
    except OSError:
        return False


def walk_files(top: str, problems: list[tuple[str, str]] | None = None):
    """Every file under local directory ``top`` (sorted per directory), following symbolic links
    to directories but entering each real directory once (so a link loop ends)."""
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            st_ = os.stat(d)
        except OSError as e:
            if problems is not None:
                problems.append((d, f"cannot read directory: {e.strerror or e}"))
            continue
        key = (st_.st_dev, st_.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if problems is not None:
                problems.append((d, f"cannot list directory: {e.strerror or e}"))
            continue
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append(e.path)
            else:
                yield e.path
        stack.extend(reversed(subdirs))


def _fits_under(top: str, problems: list[tuple[str, str]]) -> tuple[list[str], int]:
    """FITS files under a local directory, and how many other files were passed over."""
    found, other = [], 0
    for p in walk_files(top, problems):
        if is_fits_name(p) or _starts_like_fits(p):
            found.append(p)
        else:
            other += 1
    return found, other


def glob_regex(pattern: str) -> re.Pattern:
    """A compiled regex matching whole paths against a glob: ``*`` and ``?`` within one path
    component, ``[...]`` a character class, ``**`` any number of components."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            j = i + 2
            if j < n and pattern[j] == "/":
                out.append("(?:.*/)?")
                j += 1
            else:
                out.append(".*")
            i = j
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _local_glob(pattern: str, problems: list[tuple[str, str]]) -> list[str]:
    if "**" not in pattern:
        return sorted(globmod.glob(pattern))
    # ``glob(recursive=True)`` follows links to directories without end on a loop: walk from
    # the part before the first wildcard with the loop-safe walker and match whole paths
    pattern = os.path.abspath(pattern)
    m = _MAGIC.search(pattern)
    root = os.path.dirname(pattern[:m.start()]) if m else os.path.dirname(pattern)
    rx = glob_regex(pattern)
    if not os.path.isdir(root):
        return []
    return [p for p in walk_files(root, problems) if rx.match(p)]


def expand(paths) -> Inputs:
    """The files ``paths`` name (see the module docstring), each once, JWST-named ones first."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = Inputs()
    for p in map(str, paths):
        if st.is_remote(p):
            _expand_remote(p, out)
        else:
            _expand_local(p, out)
    out.files = sorted(dict.fromkeys(out.files), key=lambda f: (not _JWST_NAME.match(f.rsplit("/", 1)[-1]), f))
    return out


def _expand_local(p: str, out: Inputs) -> None:
    if p.startswith("file://"):
        p = p[len("file://"):]
    if os.path.isdir(p):
        found, other = _fits_under(p, out.problems)
        if not found:
            out.problems.append((p, f"directory holds no FITS files ({other} other files passed over)"))
        out.files.extend(os.path.abspath(f) for f in found)
    elif os.path.lexists(p):
        out.files.append(os.path.abspath(p))
        out.named.add(os.path.abspath(p))
    elif _MAGIC.search(p):
        matches = _local_glob(p, out.problems)
        if not matches:
            out.problems.append((p, "no file matches this pattern"))
        for m in matches:
            if os.path.isdir(m):
                found, _ = _fits_under(m, out.problems)
                out.files.extend(os.path.abspath(f) for f in found)
            else:
                out.files.append(os.path.abspath(m))
    else:
        out.problems.append((p, "no such file or directory"))


def _expand_remote(p: str, out: Inputs) -> None:
    fs, root = st.fs_and_path(p)
    proto = p.split("://", 1)[0]
    if _MAGIC.search(root):
        found = []
        for m in sorted(fs.glob(root)):
            found += sorted(f for f in fs.find(m) if is_fits_name(f)) if fs.isdir(m) else [m]
        why = "no object matches this pattern"
    elif fs.isdir(root):
        found = sorted(f for f in fs.find(root) if is_fits_name(f))
        why = "no FITS files (*.fits, *.fits.gz) under this prefix"
    else:
        found = [root] if fs.exists(root) else []
        out.named.update(f"{proto}://{f}" for f in found)
        why = "no such object"
    if not found:
        out.problems.append((p, why))
    out.files.extend(f"{proto}://{f}" for f in found)
