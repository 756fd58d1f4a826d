"""Cluster specs: what would run lrscube on a LocalCluster, SLURM, PBS, Kubernetes or
dask-gateway, built without starting or submitting anything.

    spec = make_cluster_spec("slurm", jobs=10, queue="normal")
    print(spec.render())          # the batch script each job runs
    cluster = spec.start()        # the one call that starts a scheduler and submits jobs
    lrscube.ingest(paths, "s3://bucket/cube.zarr", scheduler=cluster.scheduler_address)

==========  ============================================  ==========================================
kind        the spec holds                                ``start()`` builds
==========  ============================================  ==========================================
local       LocalCluster kwargs (``lrscube.local.*``)     ``lrscube.deploy.cluster.start_local_cluster``
slurm, pbs  SLURMCluster / PBSCluster kwargs, job script  that cluster, scaled to ``jobs`` jobs
kubernetes  the dask operator's DaskCluster resource      ``dask_kubernetes.operator.KubeCluster``
gateway     gateway address and cluster options           ``Gateway(...).new_cluster()``, scaled
==========  ============================================  ==========================================

Defaults come from ``configs/deploy.yaml`` (its header gives the precedence). Building a spec
imports the optional package of its kind (dask-jobqueue, dask-kubernetes: ``pip install
'lrscube[deploy]'``) and contacts nothing: no scheduler, no sbatch/qsub, no Kubernetes API.

Workers need the S3 endpoint and lrscube's worker memory settings when they start; a spec
carries them in ``worker_env`` and writes them into the job script or manifest (never
credentials). For a cluster somebody else started, :func:`forward_env` hands the S3 settings
to its present and future workers through a worker plugin.

``python -m lrscube.deploy.cluster_specs KIND [key=value ...]`` prints a spec (job script, manifest).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import yaml
from distributed.diagnostics.plugin import WorkerPlugin

from .cluster import load_dask_defaults
from ..config.profiles import configs_dir

KINDS = ("local", "slurm", "pbs", "kubernetes", "gateway")

#: the scheduler address a hand-submitted job script reads at run time
SCHEDULER_FROM_ENV = "${DASK_SCHEDULER_ADDRESS}"
_JOB_ID_VAR = {"slurm": "SLURM_JOB_ID", "pbs": "PBS_JOBID"}
_JOBQUEUE_CLASSES = {"slurm": ("SLURMCluster", "SLURMJob"), "pbs": ("PBSCluster", "PBSJob")}


# --------------------------------------------------------------------------- configuration


def _underscored(d: dict) -> dict:
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def load_deploy_config(path: str | Path | None = None) -> dict[str, Any]:
    """The ``deploy:`` section of ``configs/deploy.yaml`` (or ``path``), keys with underscores.

    Raises ValueError naming the file when the section is missing or malformed.
    """
    path = Path(path) if path else configs_dir() / "deploy.yaml"
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict) or not isinstance(raw.get("deploy"), dict):
        raise ValueError(f"{path}: no 'deploy:' mapping (see configs/deploy.yaml in lrscube for the layout)")
    cfg = _underscored(raw["deploy"])
    for kind in KINDS:
        section = cfg.get(kind) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: deploy.{kind} must be a mapping of options, not {section!r}")
        cfg[kind] = _underscored(section)
    for key in ("forward_env", "forward_dask_config"):
        names = cfg.get(key) or []
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{path}: deploy.{key.replace('_', '-')} must be a list of names")
        cfg[key] = names
    return cfg


def worker_env(names: list[str] | None = None, dask_keys: list[str] | None = None,
               config: dict | None = None) -> dict[str, str]:
    """The environment a worker should start with.

    ``names``: variables copied from this process's environment when set (default
    ``deploy.forward-env``: the S3 endpoint and region, never credentials). ``dask_keys``: dask
    settings exported as ``DASK_*`` variables with this process's values (default
    ``deploy.forward-dask-config``: the worker memory thresholds of configs/dask.yaml).
    """
    config = config or load_deploy_config()
    names = config["forward_env"] if names is None else names
    dask_keys = config["forward_dask_config"] if dask_keys is None else dask_keys
    env = {n: os.environ[n] for n in names if os.environ.get(n)}
    load_dask_defaults()
    for key in dask_keys:
        value = dask.config.get(key, None)
        if value is not None:
            env["DASK_" + key.upper().replace("-", "_").replace(".", "__")] = str(value)
    return env


# --------------------------------------------------------------------------- the spec


@dataclass
class ClusterSpec:
    """Everything needed to start one kind of cluster; nothing is started until :meth:`start`."""

    kind: str
    cluster_class: str  # import path of what start() calls
    kwargs: dict[str, Any]  # what start() passes to it
    worker_env: dict[str, str] = field(default_factory=dict)
    job_script: str | None = None  # slurm, pbs: the batch script one job runs
    manifest: dict | None = None  # kubernetes: the DaskCluster custom resource
    jobs: int | None = None  # slurm, pbs: jobs requested by start()
    n_workers: int | None = None  # gateway: workers requested by start()
    cluster_options: dict[str, Any] = field(default_factory=dict)  # gateway

    def render(self) -> str:
        """What a person would submit by hand: the job script, the manifest, or the kwargs."""
        if self.job_script is not None:
            return self.job_script
        if self.manifest is not None:
            return yaml.safe_dump(self.manifest, sort_keys=False)
        return yaml.safe_dump({"cluster_class": self.cluster_class, "kwargs": self.kwargs,
                               "cluster_options": self.cluster_options, "n_workers": self.n_workers,
                               "worker_env": self.worker_env}, sort_keys=False)

    def start(self):
        """Start the cluster: a scheduler, then jobs, pods or gateway workers. Returns the cluster.

        The only method here that starts or submits anything. Use ``cluster.scheduler_address``
        (or ``cluster.get_client()`` for dask-gateway) with lrscube's ``scheduler=`` argument.
        """
        module, _, name = self.cluster_class.rpartition(".")
        target = getattr(importlib.import_module(module), name)
        if self.kind == "gateway":
            cluster = target(**self.kwargs).new_cluster(**self.cluster_options)
            if self.worker_env:
                with cluster.get_client(set_as_default=False) as client:
                    forward_env(client, self.worker_env)
            if self.n_workers:
                cluster.scale(self.n_workers)
            return cluster
        cluster = target(**self.kwargs)
        if self.jobs:
            cluster.scale(jobs=self.jobs)
        return cluster

    def __str__(self) -> str:
        what = {"slurm": f"{self.jobs} SLURM jobs", "pbs": f"{self.jobs} PBS jobs",
                "gateway": f"{self.n_workers} gateway workers"}.get(self.kind, self.kind)
        return f"ClusterSpec({self.kind}: {self.cluster_class}, {what}; worker env {sorted(self.worker_env)})"


# --------------------------------------------------------------------------- builders


def _require(module: str, kind: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"make_cluster_spec({kind!r}) needs {module.split('.')[0].replace('_', '-')}: "
                          f"pip install 'lrscube[deploy]' ({e})") from e


def _site_sets(kind: str, key: str) -> bool:
    """Whether the user's or site's dask config sets ``jobqueue.<kind>.<key>`` (not a shipped default)."""
    name = f"jobqueue.{kind}.{key.replace('_', '-')}"
    current = dask.config.get(name, None)
    shipped = dask.config.get(name, None, config=dask.config.merge(*dask.config.defaults))
    return current is not None and current != shipped


def _params(*callables) -> set[str]:
    return {p for c in callables for p in inspect.signature(c).parameters if p not in ("self", "kwargs", "job_kwargs")}


def _jobqueue_spec(kind: str, cfg: dict, options: dict) -> ClusterSpec:
    jq = _require("dask_jobqueue", kind)
    cluster_cls = getattr(jq, _JOBQUEUE_CLASSES[kind][0])
    job_cls = getattr(importlib.import_module(f"dask_jobqueue.{kind}"), _JOBQUEUE_CLASSES[kind][1])
    job_params = _params(job_cls.__init__, jq.core.Job.__init__) - {"scheduler", "name"}
    cluster_params = _params(cluster_cls.__init__, jq.core.JobQueueCluster.__init__)
    defaults = dict(cfg[kind])
    jobs = options.pop("jobs", defaults.pop("jobs", None))
    env = options.pop("worker_env", None)
    env = worker_env(config=cfg) if env is None else dict(env)

    kwargs = {k: v for k, v in defaults.items() if v is not None and not _site_sets(kind, k)}
    kwargs.update(options)
    unknown = set(kwargs) - job_params - cluster_params
    if unknown:
        raise ValueError(f"make_cluster_spec({kind!r}): unknown option(s) {sorted(unknown)}; "
                         f"see the {cluster_cls.__name__} documentation of dask-jobqueue")
    prologue = kwargs.pop("job_script_prologue", None)
    if prologue is None:
        prologue = dask.config.get(f"jobqueue.{kind}.job-script-prologue", None) or []
    kwargs["job_script_prologue"] = [*prologue, *(f"export {k}={shlex.quote(v)}" for k, v in env.items())]

    job_kwargs = {k: v for k, v in kwargs.items() if k in job_params}
    script = job_cls(scheduler=SCHEDULER_FROM_ENV, name=f"lrscube-${{{_JOB_ID_VAR[kind]}}}",
                     **job_kwargs).job_script()
    return ClusterSpec(kind, f"dask_jobqueue.{cluster_cls.__name__}", kwargs, worker_env=env,
                       job_script=script, jobs=None if jobs is None else int(jobs))


def _kubernetes_spec(cfg: dict, options: dict) -> ClusterSpec:
    op = _require("dask_kubernetes.operator", "kubernetes")
    k = {**cfg["kubernetes"], **options}
    env = k.pop("worker_env", None)
    env = worker_env(config=cfg) if env is None else dict(env)
    env = {**env, **{str(a): str(b) for a, b in (k.pop("env", None) or {}).items()}}
    image = k.pop("image", None) or cfg.get("image")
    name = k.pop("name", "lrscube")
    namespace = k.pop("namespace", None)
    secret = k.pop("credentials_secret", None)
    worker_res = k.pop("worker_resources", None)
    sched_res = k.pop("scheduler_resources", None)
    n_workers = int(k.pop("n_workers", 3))
    if k:
        raise ValueError(f"make_cluster_spec('kubernetes'): unknown option(s) {sorted(k)}")
    manifest = op.make_cluster_spec(name=name, image=image, n_workers=n_workers,
                                    resources=copy.deepcopy(worker_res), env=env, worker_command="dask worker")
    if namespace:
        manifest["metadata"]["namespace"] = namespace
    for c in manifest["spec"]["scheduler"]["spec"]["containers"]:
        # the operator's helper starts the scheduler with `dask-scheduler`, an executable
        # distributed no longer installs (only `dask scheduler`): keep its arguments, fix the command
        if c.get("args") and c["args"][0] == "dask-scheduler":
            c["args"] = ["dask", "scheduler", *c["args"][1:]]
        c["resources"] = copy.deepcopy(sched_res)
    for role in ("scheduler", "worker"):
        for c in manifest["spec"][role]["spec"]["containers"]:
            if secret:
                c["envFrom"] = [{"secretRef": {"name": secret, "optional": True}}]
    kwargs = {"custom_cluster_spec": manifest}
    if namespace:
        kwargs["namespace"] = namespace
    return ClusterSpec("kubernetes", "dask_kubernetes.operator.KubeCluster", kwargs,
                       worker_env=env, manifest=manifest)


def _gateway_spec(cfg: dict, options: dict) -> ClusterSpec:
    g = {**cfg["gateway"], **options}
    env = g.pop("worker_env", None)
    env = worker_env(dask_keys=[], config=cfg) if env is None else dict(env)
    n_workers = g.pop("n_workers", None)
    cluster_options = dict(g.pop("cluster_options", None) or {})
    connection = {k: g.pop(k, None) for k in ("address", "proxy_address", "public_address", "auth")}
    kwargs = {k: v for k, v in connection.items() if v is not None}
    if g:
        raise ValueError(f"make_cluster_spec('gateway'): unknown option(s) {sorted(g)}; "
                         "server-defined options go in cluster_options={...}")
    return ClusterSpec("gateway", "dask_gateway.Gateway", kwargs, worker_env=env,
                       n_workers=None if n_workers is None else int(n_workers), cluster_options=cluster_options)


def _local_spec(cfg: dict, options: dict) -> ClusterSpec:
    load_dask_defaults()
    kwargs = {
        "n_workers": int(dask.config.get("lrscube.local.n-workers", None) or os.cpu_count() or 1),
        "threads_per_worker": int(dask.config.get("lrscube.local.threads-per-worker", 1)),
        "memory_limit": dask.config.get("lrscube.local.memory-limit", "auto"),
        "processes": bool(dask.config.get("lrscube.local.processes", True)),
        **cfg["local"],
        **options,
    }
    return ClusterSpec("local", "lrscube.deploy.cluster.start_local_cluster", kwargs)


def make_cluster_spec(kind: str, *, config: str | Path | None = None, **options) -> ClusterSpec:
    """Build (never start) the cluster spec of ``kind``: local, slurm, pbs, kubernetes, gateway.

    Parameters
    ----------
    kind : one of :data:`KINDS`
    config : a deploy YAML in the layout of configs/deploy.yaml (default: that file)
    **options : override the config; for slurm/pbs any SLURMCluster/PBSCluster keyword plus
        ``jobs``; for kubernetes ``name, image, n_workers, worker_resources,
        scheduler_resources, credentials_secret, env, namespace``; for gateway ``address,
        proxy_address, auth, n_workers, cluster_options``; for all ``worker_env`` (a dict that
        replaces the forwarded environment).

    Example
    -------
    >>> spec = make_cluster_spec("slurm", queue="normal", jobs=4)   # doctest: +SKIP
    >>> print(spec.job_script)                                       # doctest: +SKIP
    """
    if kind not in KINDS:
        raise ValueError(f"make_cluster_spec: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    cfg = load_deploy_config(config)
    options = _underscored(options)
    if kind in ("slurm", "pbs"):
        return _jobqueue_spec(kind, cfg, options)
    if kind == "kubernetes":
        return _kubernetes_spec(cfg, options)
    if kind == "gateway":
        return _gateway_spec(cfg, options)
    return _local_spec(cfg, options)


# --------------------------------------------------------------------------- workers you did not start


class WorkerEnvironment(WorkerPlugin):
    """A dask worker plugin: set environment variables in each worker process, present and
    future; unregistering it restores what was there before."""

    name = "lrscube-worker-environment"

    def __init__(self, env: dict[str, str]):
        self.env = {str(k): str(v) for k, v in env.items()}
        self._saved: dict[str, str | None] = {}

    def setup(self, worker=None):
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def teardown(self, worker=None):
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def forward_env(client, env: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``env`` (default: the forwarded S3 settings of this process) in every worker of
    ``client``'s cluster, including workers that join later. Returns what was forwarded.

    For a cluster lrscube did not start (dask-gateway, a shared scheduler), so that workers
    reach the same S3 endpoint as this process. Worker memory settings cannot be changed this
    way (a worker reads them when it starts): those come from the image or the job script.
    """
    env = worker_env(dask_keys=[]) if env is None else dict(env)
    client.register_plugin(WorkerEnvironment(env), name=WorkerEnvironment.name)
    return env


# --------------------------------------------------------------------------- command line


def parse_option_value(text: str):
    """A command-line option value: YAML (numbers, lists, mappings), but text with ':' stays text
    unless it is a flow mapping or list -- YAML 1.1 reads ``12:00:00`` as the integer 43200,
    which SLURM would take as minutes."""
    stripped = text.strip()
    if ":" in stripped and not stripped.startswith(("{", "[")):
        return text
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    """``python -m lrscube.deploy.cluster_specs KIND [key=value ...]``: print the spec of KIND."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in KINDS:
        print(f"usage: python -m lrscube.deploy.cluster_specs {{{','.join(KINDS)}}} [key=value ...]\n"
              "prints the job script (slurm, pbs), DaskCluster manifest (kubernetes) or kwargs; "
              "values are parsed as YAML, except text holding ':' (times such as 12:00:00)", file=sys.stderr)
        return 2
    options = {}
    for item in argv[1:]:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"lrscube.deploy.cluster_specs: {item!r} is not key=value", file=sys.stderr)
            return 2
        options[key] = parse_option_value(value)
    print(make_cluster_spec(argv[0], **options).render(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
