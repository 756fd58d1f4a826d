"""deploy/ and lrscube.deploy.cluster_specs: what can be checked without Docker, a batch system or a
Kubernetes cluster.

Files are parsed and checked for the keys that make them work (images, the `dask scheduler` /
`dask worker` commands, ports 8786/8787, the S3 endpoint variables). The compose file's own
scheduler and worker command lines are run as local processes. The factory builds SLURM, PBS
and Kubernetes specs with no sbatch/qsub on PATH and no kubeconfig, so nothing can be submitted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dask
import pytest
import yaml

from lrscube.deploy import cluster_specs as cs
from lrscube.config import profiles

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
S3_VARS = {"LRSCUBE_S3_ENDPOINT", "AWS_ENDPOINT_URL"}


def _load(path: Path):
    with open(path) as f:
        return yaml.safe_load(f)


def _env_dict(env) -> dict:
    """Compose/Kubernetes environment in any of its spellings -> {name: value}."""
    if isinstance(env, dict):
        return {str(k): v for k, v in env.items()}
    out = {}
    for item in env or []:
        if isinstance(item, str):
            k, _, v = item.partition("=")
            out[k] = v
        else:
            out[item["name"]] = item.get("value", item.get("valueFrom"))
    return out


def _interpolate(text: str, env: dict | None = None) -> str:
    """Compose's ${VAR} / ${VAR:-default} interpolation."""
    env = os.environ if env is None else env
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


@pytest.fixture
def no_submission(monkeypatch, tmp_path):
    """No batch-system commands on PATH and no Kubernetes config: a spec that tried to submit fails."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    for name in ("LRSCUBE_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    from distributed import Scheduler

    before = len(Scheduler._instances)
    yield
    assert len(Scheduler._instances) == before, "building a spec must not start a scheduler"


# --------------------------------------------------------------------------- docker


def test_compose_file_has_scheduler_workers_and_minio():
    c = _load(COMPOSE)
    s = c["services"]
    assert {"scheduler", "worker", "minio", "createbucket"} <= set(s)
    # one image, built from the repository with deploy/docker/Dockerfile
    for name in ("scheduler", "worker", "lrscube"):
        assert s[name]["image"] == "lrscube:0.1.0"
        build = s[name]["build"]
        assert (COMPOSE.parent / build["context"] / "pyproject.toml").exists()
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert s["scheduler"]["command"][:2] == ["dask", "scheduler"]
    assert {"8786:8786", "8787:8787"} <= set(s["scheduler"]["ports"])
    assert s["worker"]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert s["worker"]["deploy"]["replicas"] >= 2
    for name in ("scheduler", "worker", "lrscube"):
        env = _env_dict(s[name]["environment"])
        assert env["LRSCUBE_S3_ENDPOINT"] == env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    assert _env_dict(s["lrscube"]["environment"])["DASK_SCHEDULER_ADDRESS"] == "tcp://scheduler:8786"
    assert s["lrscube"]["profiles"] == ["cli"]  # `docker compose up` does not start it
    # MinIO serves S3 on 9000; the init container makes the bucket once it is healthy
    assert "9000:9000" in s["minio"]["ports"] and s["minio"]["command"][:2] == ["server", "/data"]
    assert s["createbucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mb" in s["createbucket"]["entrypoint"] and "local/lrscube" in s["createbucket"]["entrypoint"]
    assert "minio:9000" in s["createbucket"]["environment"]["MC_HOST_local"]
    assert s["worker"]["depends_on"]["createbucket"]["condition"] == "service_completed_successfully"
    # the credentials the store uses are MinIO's root user
    minio_env, worker_env = _env_dict(s["minio"]["environment"]), _env_dict(s["worker"]["environment"])
    assert _interpolate(worker_env["AWS_ACCESS_KEY_ID"], {}) == _interpolate(minio_env["MINIO_ROOT_USER"], {})
    assert _interpolate(worker_env["AWS_SECRET_ACCESS_KEY"], {}) == _interpolate(minio_env["MINIO_ROOT_PASSWORD"], {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_compose_commands_start_a_working_cluster(tmp_path):
    """The scheduler and worker command lines of compose.yaml, run here as processes (no
    containers): `scheduler` -> 127.0.0.1, ports -> free ones, the compose environment."""
    from distributed import Client

    s = _load(COMPOSE)["services"]
    port, dash = _free_port(), _free_port()
    dask_cli = str(Path(sys.executable).with_name("dask"))

    def command(service):
        args = [_interpolate(a, {}) for a in s[service]["command"]]
        args = [a.replace("scheduler:8786", f"127.0.0.1:{port}") for a in args]
        args = [str(port) if a == "8786" else (f":{dash}" if a == ":8787" else a) for a in args]
        return [dask_cli, *args[1:]]

    env = {**os.environ, **{k: _interpolate(str(v), {}) for k, v in _env_dict(s["worker"]["environment"]).items()}}
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("scheduler", "worker0", "worker1")]
    procs = [subprocess.Popen(command("scheduler"), env=env, stdout=logs[0], stderr=subprocess.STDOUT, cwd=tmp_path)]
    try:
        health = s["scheduler"]["healthcheck"]["test"]
        assert health[:2] == ["CMD", "python"]
        check = [sys.executable, *health[2:]]
        check[-1] = check[-1].replace("localhost:8787", f"127.0.0.1:{dash}")
        deadline = time.time() + 30
        while subprocess.run(check, capture_output=True).returncode != 0:
            assert time.time() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.3)
        for i in range(s["worker"]["deploy"]["replicas"]):
            procs.append(subprocess.Popen(command("worker"), env=env, stdout=logs[1 + i],
                                          stderr=subprocess.STDOUT, cwd=tmp_path))
        with Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:
            client.wait_for_workers(2, timeout=30)
            info = client.scheduler_info()["workers"].values()
            assert all(w["nthreads"] == 1 and w["memory_limit"] == 4 * 2**30 for w in info)
            seen = client.run(lambda: os.environ.get("LRSCUBE_S3_ENDPOINT"))
            assert set(seen.values()) == {"http://minio:9000"}
            assert client.submit(sum, [1, 2, 3]).result() == 6
        with urllib.request.urlopen(f"http://127.0.0.1:{dash}/health") as r:
            assert r.status == 200
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_builds_lrscube_with_s3_and_dask_commands():
    ins = _dockerfile_instructions()
    ops = [op for op, _ in ins]
    assert ops[0] == "FROM" and ins[0][1].startswith("python:3.1")
    copied = [rest.split()[:-1] for op, rest in ins if op == "COPY"]
    sources = [src for srcs in copied for src in srcs]
    for src in sources:  # the build context is the repository root
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which the repository does not have"
    assert {"pyproject.toml", "lrscube", "configs"} <= set(sources)
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert 'pip install ".[s3]"' in runs
    assert "cp configs/dask.yaml /etc/dask/" in runs
    for shim in ("dask-scheduler", "dask-worker"):  # for the helm chart and older operator helpers
        assert f"/usr/local/bin/{shim}" in runs
    assert 'exec dask scheduler "$@"' in DOCKERFILE.read_text() and 'exec dask worker "$@"' in DOCKERFILE.read_text()
    expose = [rest for op, rest in ins if op == "EXPOSE"]
    assert expose and {"8786", "8787"} <= set(expose[0].split())
    assert ("CMD", '["dask", "scheduler"]') in ins
    assert any(op == "USER" for op in ops)
    # the BuildKit ignore file next to the Dockerfile lets every copied path through
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:] and all(f"!{src}" in ignore or f"!{src}/" in ignore for src in sources)


# --------------------------------------------------------------------------- configuration


def test_deploy_config_loads_and_is_not_a_mode_profile():
    cfg = cs.load_deploy_config()
    assert cfg["image"] == "lrscube:0.1.0"
    assert {"slurm", "pbs", "kubernetes", "gateway", "local"} <= set(cfg)
    assert "LRSCUBE_S3_ENDPOINT" in cfg["forward_env"]
    assert not any("SECRET" in n or n == "AWS_ACCESS_KEY_ID" for n in cfg["forward_env"]), "never forward credentials"
    assert "deploy" not in profiles.available()


def test_deploy_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "deploy.yaml"
    bad.write_text("slurm: {cores: 4}\n")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        cs.load_deploy_config(bad)
    bad.write_text("deploy:\n  slurm: [4]\n")
    with pytest.raises(ValueError, match="deploy.slurm"):
        cs.make_cluster_spec("slurm", config=bad)
    with pytest.raises(ValueError, match="unknown kind"):
        cs.make_cluster_spec("condor")


# --------------------------------------------------------------------------- SLURM / PBS


def test_slurm_spec_is_built_without_submitting(no_submission, monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (lrscube[deploy])")
    monkeypatch.setenv("LRSCUBE_S3_ENDPOINT", "https://s3.example.org")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    spec = cs.make_cluster_spec("slurm", queue="normal", account="jwst", jobs=5)
    assert spec.cluster_class == "dask_jobqueue.SLURMCluster" and spec.jobs == 5
    assert spec.kwargs["cores"] == 8 and spec.kwargs["processes"] == 8 and spec.kwargs["memory"] == "32GiB"
    script = spec.job_script
    assert script.startswith("#!/usr/bin/env bash")
    for directive in ("#SBATCH -p normal", "#SBATCH -A jwst", "#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00",
                      "#SBATCH -J lrscube-worker"):
        assert directive in script
    # one thread per worker process; the scheduler address is read when the job runs
    assert "--nthreads 1" in script and "--nworkers 8" in script and "--memory-limit 4.00GiB" in script
    assert "distributed.cli.dask_worker ${DASK_SCHEDULER_ADDRESS} --name lrscube-${SLURM_JOB_ID}" in script
    assert "export LRSCUBE_S3_ENDPOINT=https://s3.example.org" in script
    assert "must-not-leak" not in script and "AWS_SECRET_ACCESS_KEY" not in script
    assert "export DASK_DISTRIBUTED__WORKER__MEMORY__TARGET=" in script
    # the workers' malloc settings reach the nanny as dask config, spelled so dask parses them back
    line = next(x for x in script.splitlines() if x.startswith("export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="))
    value = shlex.split(line.split("=", 1)[1])[0]
    env = {**os.environ, "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": value}
    parsed = dask.config.collect_env(env)["distributed"]["nanny"]["pre_spawn_environ"]
    assert int(parsed["MALLOC_TRIM_THRESHOLD_"]) > 65536 and "MALLOC_MMAP_THRESHOLD_" in parsed


def test_slurm_precedence_option_over_site_config_over_lrscube_defaults(no_submission):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (lrscube[deploy])")
    import dask

    with dask.config.set({"jobqueue.slurm.walltime": "12:00:00", "jobqueue.slurm.cores": 16,
                          "jobqueue.slurm.job-script-prologue": ["module load python"]}):
        spec = cs.make_cluster_spec("slurm", cores=4, processes=4)
        assert "#SBATCH -t 12:00:00" in spec.job_script  # site config beats configs/deploy.yaml
        assert "--cpus-per-task=4" in spec.job_script  # an explicit option beats both
        assert spec.job_script.index("module load python") < spec.job_script.index("export DASK_")
    with pytest.raises(ValueError, match="unknown option"):
        cs.make_cluster_spec("slurm", queeue="normal")


def test_pbs_spec(no_submission):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (lrscube[deploy])")
    spec = cs.make_cluster_spec("pbs", queue="workq", worker_env={"LRSCUBE_S3_ENDPOINT": "http://s3:9000"})
    assert spec.cluster_class == "dask_jobqueue.PBSCluster"
    assert "#PBS -q workq" in spec.job_script and "#PBS -l select=1:ncpus=8" in spec.job_script
    assert "${DASK_SCHEDULER_ADDRESS} --name lrscube-${PBS_JOBID}" in spec.job_script
    assert "export LRSCUBE_S3_ENDPOINT=http://s3:9000" in spec.job_script


def test_jobqueue_yaml_uses_dask_jobqueue_keys():
    cfg = _load(DEPLOY / "slurm" / "jobqueue.yaml")
    assert set(cfg["jobqueue"]) == {"slurm", "pbs"}
    jq = pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (lrscube[deploy])")
    shipped = _load(Path(jq.__file__).with_name("jobqueue.yaml"))["jobqueue"]
    for kind, keys in cfg["jobqueue"].items():
        assert set(keys) <= set(shipped[kind]), f"not dask-jobqueue {kind} keys: {set(keys) - set(shipped[kind])}"


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_slurm_launcher_dry_run(no_submission, capsys):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is an optional dependency (lrscube[deploy])")
    launcher = _load_script(DEPLOY / "slurm" / "run_lrscube_slurm.py")
    rc = launcher.main(["s3://bucket/inputs/", "--store", "s3://bucket/cube.zarr", "--dry-run", "--jobs", "3",
                        "-o", "queue=normal", "-o", "walltime=12:00:00", "-o", "job_extra_directives=[--exclusive]"])
    out = capsys.readouterr()
    assert rc == 0
    assert "#SBATCH -p normal" in out.out and "#SBATCH --exclusive" in out.out
    assert "#SBATCH -t 12:00:00" in out.out  # not YAML's sexagesimal 43200
    assert "3 SLURM jobs" in out.err
    rc = launcher.main(["in/", "--store", "cube.zarr", "--dry-run", "--kind", "pbs"])
    assert rc == 0 and "#PBS" in capsys.readouterr().out


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_spec_is_a_daskcluster_resource(no_submission):
    pytest.importorskip("dask_kubernetes", reason="dask-kubernetes is an optional dependency (lrscube[deploy])")
    spec = cs.make_cluster_spec("kubernetes", n_workers=6, namespace="miri",
                                env={"LRSCUBE_S3_ENDPOINT": "http://minio.minio:9000"})
    m = spec.manifest
    assert m["apiVersion"] == "kubernetes.dask.org/v1" and m["kind"] == "DaskCluster"
    assert m["metadata"] == {"name": "lrscube", "namespace": "miri"}
    assert spec.kwargs["custom_cluster_spec"] is m and spec.kwargs["namespace"] == "miri"
    sched = m["spec"]["scheduler"]["spec"]["containers"][0]
    worker = m["spec"]["worker"]["spec"]["containers"][0]
    assert m["spec"]["worker"]["replicas"] == 6
    assert sched["args"][:2] == ["dask", "scheduler"] and worker["args"][:2] == ["dask", "worker"]
    assert sched["image"] == worker["image"] == "lrscube:0.1.0"
    assert {p["containerPort"] for p in sched["ports"]} == {8786, 8787}
    assert {p["port"] for p in m["spec"]["scheduler"]["service"]["ports"]} == {8786, 8787}
    for c in (sched, worker):
        assert _env_dict(c["env"])["LRSCUBE_S3_ENDPOINT"] == "http://minio.minio:9000"
        assert c["envFrom"] == [{"secretRef": {"name": "lrscube-s3", "optional": True}}]
    assert worker["resources"]["limits"]["memory"] == "4Gi" and sched["resources"]["limits"]["memory"] == "2Gi"
    assert yaml.safe_load(spec.render()) == m  # plain YAML, no anchors or Python tags
    assert "&id" not in spec.render()


def test_committed_daskcluster_manifest_matches_the_factory(no_submission):
    committed = _load(DEPLOY / "kubernetes" / "daskcluster.yaml")
    assert committed["kind"] == "DaskCluster"
    sched = committed["spec"]["scheduler"]["spec"]["containers"][0]
    worker = committed["spec"]["worker"]["spec"]["containers"][0]
    assert sched["args"][:2] == ["dask", "scheduler"] and worker["args"][:2] == ["dask", "worker"]
    assert {p["containerPort"] for p in sched["ports"]} == {8786, 8787}
    assert S3_VARS & set(_env_dict(worker["env"]))
    pytest.importorskip("dask_kubernetes", reason="dask-kubernetes is an optional dependency (lrscube[deploy])")
    rebuilt = cs.make_cluster_spec("kubernetes", worker_env=_env_dict(worker["env"])).manifest
    assert rebuilt == committed, "regenerate deploy/kubernetes/daskcluster.yaml from the factory (see its header)"


def test_helm_values_for_the_dask_chart():
    v = _load(DEPLOY / "kubernetes" / "helm-values.yaml")
    image = cs.load_deploy_config()["image"]
    for role in ("scheduler", "worker"):
        assert f"{v[role]['image']['repository']}:{v[role]['image']['tag']}" == image
        assert _env_dict(v[role]["env"])["LRSCUBE_S3_ENDPOINT"].startswith("http")
    assert v["scheduler"]["servicePort"] == 8786
    # the chart execs `dask-scheduler` and worker.image.dask_worker: the image maps both to `dask ...`
    assert v["worker"]["image"]["dask_worker"] == "dask-worker"
    assert "/usr/local/bin/dask-worker" in DOCKERFILE.read_text()
    worker_env = _env_dict(v["worker"]["env"])
    assert worker_env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "lrscube-s3"
    assert v["worker"]["threads_per_worker"] == 1 and v["jupyter"]["enabled"] is False


# --------------------------------------------------------------------------- gateway, local


def test_gateway_spec_and_example(no_submission, capsys, monkeypatch):
    monkeypatch.setenv("LRSCUBE_S3_ENDPOINT", "https://s3.example.org")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    spec = cs.make_cluster_spec("gateway", address="https://gateway.example.org", n_workers=10,
                                cluster_options={"image": "lrscube:0.1.0"})
    assert spec.cluster_class == "dask_gateway.Gateway"
    assert spec.kwargs == {"address": "https://gateway.example.org"} and spec.n_workers == 10
    assert spec.cluster_options == {"image": "lrscube:0.1.0"}
    assert spec.worker_env == {"LRSCUBE_S3_ENDPOINT": "https://s3.example.org"}  # no secrets, no DASK_* settings
    with pytest.raises(ValueError, match="cluster_options"):
        cs.make_cluster_spec("gateway", worker_memory=4)
    example = _load_script(DEPLOY / "kubernetes" / "gateway_example.py")
    assert example.main(["s3://bucket/in/", "--store", "s3://bucket/cube.zarr", "--dry-run",
                         "--address", "https://gw", "-c", "worker_memory=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["kwargs"] == {"address": "https://gw"} and printed["cluster_options"] == {"worker_memory": 4}


def test_local_spec_reads_lrscube_dask_config(no_submission):
    import dask

    with dask.config.set({"lrscube.local.n-workers": 3}):
        spec = cs.make_cluster_spec("local", memory_limit="2GiB")
    assert spec.cluster_class == "lrscube.deploy.cluster.start_local_cluster"
    assert spec.kwargs == {"n_workers": 3, "threads_per_worker": 1, "memory_limit": "2GiB", "processes": True}


def test_worker_environment_plugin_sets_and_restores(monkeypatch):
    monkeypatch.setenv("LRSCUBE_S3_ENDPOINT", "before")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    plugin = cs.WorkerEnvironment({"LRSCUBE_S3_ENDPOINT": "http://s3:9000", "AWS_ENDPOINT_URL": "http://s3:9000"})
    plugin.setup(worker=None)
    assert os.environ["LRSCUBE_S3_ENDPOINT"] == os.environ["AWS_ENDPOINT_URL"] == "http://s3:9000"
    plugin.teardown(worker=None)
    assert os.environ["LRSCUBE_S3_ENDPOINT"] == "before" and "AWS_ENDPOINT_URL" not in os.environ


def test_cluster_specs_command_line(no_submission, capsys):
    pytest.importorskip("dask_kubernetes", reason="dask-kubernetes is an optional dependency (lrscube[deploy])")
    assert cs.main(["kubernetes", "n_workers=2", "name=miri"]) == 0
    m = yaml.safe_load(capsys.readouterr().out)
    assert m["metadata"]["name"] == "miri" and m["spec"]["worker"]["replicas"] == 2
    assert cs.parse_option_value("12:00:00") == "12:00:00" and cs.parse_option_value("[a, b]") == ["a", "b"]
    assert cs.parse_option_value("{A: 'http://x:9000'}") == {"A": "http://x:9000"}
    assert cs.main(["nonsense"]) == 2
