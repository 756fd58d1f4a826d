"""`crds certify` run offline (no CRDS server) against a CRDS context a test builds itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CERTIFY = textwrap.dedent("""
    import glob, json, os, sys
    from crds.refactoring import checksum
    for f in glob.glob(os.path.join(os.environ["CRDS_PATH"], "mappings", "jwst", "*map")):
        checksum.update_checksum(f)
    from crds.certify import certify
    from crds.core import log
    certify.certify_files(sys.argv[1:], context="jwst_0001.pmap", observatory="jwst", check_rmap=True)
    print("RESULT", json.dumps({"errors": log.errors()}))
""")


def certify_offline(files, tmp_path, mappings: dict[str, str]) -> tuple[int, str]:
    """Run `crds certify` (its Python API, in a fresh process) offline against a context of our
    own, ``mappings`` (file name -> text; its pmap is jwst_0001.pmap); returns (errors, log)."""
    pytest.importorskip("crds")
    root = tmp_path / "crds_cache"
    mdir = root / "mappings" / "jwst"
    mdir.mkdir(parents=True, exist_ok=True)
    (root / "references" / "jwst").mkdir(parents=True, exist_ok=True)
    for name, text in mappings.items():
        (mdir / name).write_text(text)
    env = {**os.environ, "CRDS_PATH": str(root), "CRDS_SERVER_URL": "https://localhost:1", "CRDS_MODE": "local"}
    p = subprocess.run([sys.executable, "-c", CERTIFY, *map(str, files)], env=env, capture_output=True, text=True,
                       timeout=600)
    out = p.stdout + p.stderr
    assert "RESULT" in out, out[-3000:]
    return json.loads(out.split("RESULT", 1)[1].strip().splitlines()[0])["errors"], out


def mask_context(instrument: str, match_keys: tuple[str, ...], cases: dict[tuple[str, ...], dict[str, str]]
                 ) -> dict[str, str]:
    """A CRDS context of our own (``jwst_0001.pmap`` -> imap -> MASK rmap) for ``instrument``,
    its MASK rmap selecting by ``match_keys`` (e.g. META.INSTRUMENT.DETECTOR), then by date:
    ``cases`` maps a match tuple to {USEAFTER "YYYY-MM-DD hh:mm:ss": reference file name}."""
    inst, low = instrument.upper(), instrument.lower()
    imap, rmap = f"jwst_{low}_0001.imap", f"jwst_{low}_mask_0001.rmap"

    def header(name: str, mapping: str, parkey: str, extra: str = "") -> str:
        return (f"header = {{\n{extra}    'derived_from' : 'built by lrscube tests',\n"
                + (f"    'filekind' : 'MASK',\n" if mapping == "REFERENCE" else "")
                + (f"    'instrument' : '{inst}',\n" if mapping != "PIPELINE" else "")
                + f"    'mapping' : '{mapping}',\n    'name' : '{name}',\n    'observatory' : 'JWST',\n"
                f"    'parkey' : {parkey},\n    'sha1sum' : '0',\n}}\n\n")

    keys = ", ".join(f"'{k}'" for k in match_keys)
    selector = "".join(
        f"    ({', '.join(repr(v) for v in match)}) : UseAfter({{\n"
        + "".join(f"        '{when}' : '{ref}',\n" for when, ref in by_date.items()) + "    }),\n"
        for match, by_date in cases.items())
    return {
        "jwst_0001.pmap": header("jwst_0001.pmap", "PIPELINE", "('META.INSTRUMENT.NAME',)")
        + f"selector = {{\n    '{inst}' : '{imap}',\n}}\n",
        imap: header(imap, "INSTRUMENT", "('REFTYPE',)") + f"selector = {{\n    'mask' : '{rmap}',\n}}\n",
        rmap: header(rmap, "REFERENCE", f"(({keys}), ('META.OBSERVATION.DATE', 'META.OBSERVATION.TIME'))",
                     "    'classes' : ('Match', 'UseAfter'),\n")
        + f"selector = Match({{\n{selector}}})\n",
    }
