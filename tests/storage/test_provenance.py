"""Run records: every ingest, detect and export leaves one in the store; `lrscube history` lists
them; the MASK files' HISTORY names the runs they come from."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import lrscube
from lrscube.storage import cube, provenance
from lrscube.cli import main


@pytest.fixture(scope="module")
def flow(tmp_path_factory, client, dense16):
    """simulate -> ingest in two runs -> detect -> export, as a user would run them."""
    work = tmp_path_factory.mktemp("prov")
    sim = dense16
    store = str(work / "store.zarr")
    files = sorted(map(str, sim.files))
    first = lrscube.ingest(files[:10], store, progress=False)
    second = lrscube.ingest(files, store, progress=False)  # 10 duplicates, 6 new
    iv = lrscube.detect(store, progress=False)
    man = lrscube.export_crds(store, str(work / "crds"), author="T. Ester", pedigree="SIMULATION")
    return {"work": work, "store": store, "files": files, "ingests": (first, second), "iv": iv, "man": man}


@pytest.mark.slow
def test_every_run_is_recorded_with_inputs_config_and_result(flow):
    store = flow["store"]
    runs = provenance.read_runs(store)
    assert [r["command"] for r in runs] == ["ingest", "ingest", "detect", "export-crds"]
    assert all(r["status"] == "ok" and r["error"] is None for r in runs)
    assert [r["started"] for r in runs] == sorted(r["started"] for r in runs)
    for r in runs:
        assert r["lrscube_version"] == lrscube.__version__ and r["software"]["numpy"] == np.__version__
        assert len(r["config_digest"]) == 16 and r["config_digest"] == provenance.config_digest(r["config"])
        assert r["seconds"] >= 0 and r["finished"] >= r["started"]

    table = cube.exposure_table(store)
    first, second = flow["ingests"]
    a, b = runs[0], runs[1]
    assert a["result"]["ingested"] == len(first.ingested) == 10 and a["result"]["n_in_cube"] == 10
    assert b["result"]["ingested"] == 6 and b["result"]["duplicates"] == 10 and b["inputs"]["files"] == 16
    # the date range of what each ingest added, from the cube itself
    added = table[table["source"].isin(second.ingested)]
    iso = provenance.exposure_summary(added)
    assert (b["inputs"]["first_exposure"], b["inputs"]["last_exposure"]) == (iso["first_exposure"], iso["last_exposure"])
    assert a["config"]["mode"] == "lrs" and a["config_digest"] == b["config_digest"]  # same settings

    d = runs[2]
    assert d["inputs"]["exposures"] == 16
    assert d["inputs"]["content_digest"] == provenance.content_digest(table["content_hash"])
    assert d["result"]["intervals"] == len(flow["iv"])
    assert d["result"]["mask_epochs"] == lrscube.open_mask(store).sizes["time"]
    assert d["config"]["parameters"]["false_alarm_pixels"] == 0.1

    e = runs[3]
    assert e["result"]["delivery"] == flow["man"]["delivery"] and e["result"]["files"] == len(flow["man"]["files"])
    assert e["inputs"]["detect_run"]["id"] == d["id"]


@pytest.mark.slow
def test_mask_files_carry_the_runs_they_come_from(flow):
    runs = {r["command"]: r for r in provenance.read_runs(flow["store"])}
    out = Path(flow["work"]) / "crds"
    for f in flow["man"]["files"]:
        history = " ".join(str(c) for c in fits.getheader(out / f["file"])["HISTORY"])
        history = " ".join(history.split())  # HISTORY cards wrap at 70 characters
        exp, det = runs["export-crds"], runs["detect"]
        assert f"export run {exp['id']}" in history and f"config digest {exp['config_digest']}" in history
        assert f"detect run {det['id']}" in history and f"config digest {det['config_digest']}" in history
        assert f"content digest {det['inputs']['content_digest']}" in history
        assert "exposures from 2 ingest runs (16 files ingested)" in history
        assert f"lrscube {lrscube.__version__}" in history


@pytest.mark.slow
def test_history_command_lists_the_runs(flow, capsys):
    assert main(["history", "--store", flow["store"]]) == 0
    text = capsys.readouterr().out
    ids = [r["id"] for r in provenance.read_runs(flow["store"])]
    assert all(i in text for i in ids)
    assert "6 ingested, 10 duplicates, 0 rejected; cube 16" in text
    assert main(["history", "--store", flow["store"], "--command", "detect", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["command"] for r in recs] == ["detect"]


def test_a_different_configuration_has_another_digest():
    base = {"mode": "lrs", "parameters": {"false_alarm_pixels": 0.1, "clip_sigma": 6.0}}
    same = {"parameters": {"clip_sigma": 6.0, "false_alarm_pixels": 0.1}, "mode": "lrs"}
    other = {"mode": "lrs", "parameters": {"false_alarm_pixels": 1.0, "clip_sigma": 6.0}}
    assert provenance.config_digest(base) == provenance.config_digest(same) != provenance.config_digest(other)
    assert provenance.content_digest(["b", "a"]) == provenance.content_digest(["a", "b"]) != provenance.content_digest(["a"])


def test_a_failed_run_is_recorded_with_its_error(tmp_path):
    from store_factory import build_store

    store = tmp_path / "s"
    build_store(store)
    with pytest.raises(ValueError, match="first_useafter"):
        lrscube.export_crds(str(store), str(tmp_path / "o"), author="x", first_useafter="2030-01-01")
    (r,) = provenance.read_runs(str(store))
    assert r["command"] == "export-crds" and r["status"] == "failed" and "first_useafter" in r["error"]
    assert r["config"]["first_useafter"] == "2030-01-01"
    assert not list((tmp_path / "o").glob("*.fits"))


def test_records_written_at_once_are_all_kept(tmp_path):
    """One object per run: writers at the same moment never lose each other's record."""
    store = str(tmp_path / "s")
    (tmp_path / "s").mkdir()

    def write(i):
        run = provenance.Run(command="detect", store=store, config={"i": i})
        provenance.write_record(store, run.record())

    threads = [threading.Thread(target=write, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = provenance.read_runs(store)
    assert sorted(r["config"]["i"] for r in runs) == list(range(24))
    assert not list((tmp_path / "s" / "runs").glob("*.partial"))


@pytest.mark.slow
def test_mask_at_file_names_its_detect_run_and_passes_the_checks(flow, tmp_path, capsys):
    from lrscube.masks.delivery_checks import validate_delivery

    det = next(r for r in provenance.read_runs(flow["store"]) if r["command"] == "detect")
    t = flow["man"]["files"][-1]["useafter"]
    path = tmp_path / "mask.fits"
    assert main(["mask-at", "--store", flow["store"], "--time", t, "--out", str(path)]) == 0
    history = " ".join(" ".join(str(c) for c in fits.getheader(path)["HISTORY"]).split())
    assert f"detect run {det['id']}" in history and f"config digest {det['config_digest']}" in history
    assert validate_delivery([path]).ok


def test_history_lists_the_commits_of_a_format_4_store(tmp_path, product_factory, client, capsys):
    """`lrscube history` on an icechunk store: each ingest batch under the ingest run that wrote
    it, a drop on its own, a delivery's tag under its export, each with time, message and
    snapshot id, as the repository itself has them."""
    import icechunk
    from store_factory import intervals_table

    from lrscube.masks import deliveries, maskcube as mc
    from lrscube.storage import engine

    store = str(tmp_path / "s.zarr")
    paths = [str(product_factory(f"jw_{i:03d}_rate.fits", mjd_start=60000.0 + 3 * i, seed=i)[0]) for i in range(5)]
    lrscube.ingest(paths[:3], store, scheduler=client.scheduler.address, progress=False)  # format 4, the default
    lrscube.ingest(paths, store, scheduler=client.scheduler.address, progress=False)  # 3 duplicates, 2 new
    assert main(["drop", "--store", store, "jw_001_rate.fits"]) == 0
    table = cube.exposure_table(store)
    defects = [(700, 40, "HOT", 2, None, 30.0)]  # a mask cube of one defect, written as detect would
    mc.write_mask_cube(store, intervals_table(table["mjd"].to_numpy(), defects), "lrs", table)
    lrscube.export_crds(store, str(tmp_path / "out"), author="test", name="d1")
    capsys.readouterr()

    repo = icechunk.Repository.open(engine.storage(cube.cube_url(store)))
    snaps = {c.message: c for c in repo.ancestry(branch="main")}
    assert set(snaps) == {"Repository initialized", "create the exposure cube", "ingest: 3 exposures, slots 0..2",
                          "ingest: 2 exposures, slots 3..4", "drop: slots 1"}
    tagged = repo.lookup_tag("delivery-d1")
    assert tagged == snaps["drop: slots 1"].id  # the delivery was made from the cube after the drop

    assert main(["history", "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = provenance.read_runs(store)
    assert [r["command"] for r in runs] == ["ingest", "ingest", "export-crds"]
    ingest1, ingest2, export = (next(i for i, ln in enumerate(lines) if r["id"] in ln) for r in runs)
    drop = next(i for i, ln in enumerate(lines) if "drop: slots 1" in ln)
    assert ingest1 < ingest2 < drop < export  # in the order they happened

    def commit_line(message):
        c = snaps[message]
        (line,) = [ln for ln in lines if c.id in ln and message in ln]
        assert c.written_at.strftime("%Y-%m-%dT%H:%M:%S") in line  # its time, to the second
        return lines.index(line)

    # the first ingest's commits (the cube's creation and its batch) under it, the second's under it
    assert ingest1 < commit_line("create the exposure cube") < commit_line("ingest: 3 exposures, slots 0..2") < ingest2
    assert ingest2 < commit_line("ingest: 2 exposures, slots 3..4") < drop
    # a drop is no recorded run: a line of its own, "commit", with its snapshot id and the tag it carries
    assert lines[drop].split()[1:3] == ["commit", snaps["drop: slots 1"].id] and "[tags: delivery-d1]" in lines[drop]
    assert f"tag delivery-d1 -> commit {tagged}" in "\n".join(lines[export:])

    assert main(["history", "--store", store, "--command", "ingest", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["command"] for r in recs] == ["ingest", "ingest"]
    assert [c["message"] for c in recs[1]["commits"]] == ["ingest: 2 exposures, slots 3..4"]
    assert recs[1]["commits"][0]["snapshot"] == snaps["ingest: 2 exposures, slots 3..4"].id

    # a repository whose snapshots are gone: the runs are still listed, and the damage named
    for p in (Path(store) / "exposures" / "snapshots").iterdir():
        p.unlink()
    assert main(["history", "--store", store]) == 0
    text = capsys.readouterr().out
    assert all(r["id"] in text for r in runs)
    assert "the repository's commits cannot be read" in text and f"lrscube verify --store {store}" in text
