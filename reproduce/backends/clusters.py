"""Cluster profiles (``cluster/*.yaml``): how a run is submitted to SLURM.

``local`` is built in: no SLURM, jobs run as processes on this machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reproduce.errors import UserError
from reproduce.schema import integer, known_keys, load_yaml, mapping
from reproduce.paths import REPO

if TYPE_CHECKING:
    from reproduce.backends import Backend

CLUSTER_DIR = REPO / "cluster"
# sbatch options the suite sets itself: overriding them through ``sbatch_extra``
# would break requeue-with-resume, the job array, the logs `reproduce logs`
# reads, or contradict a field of the profile. Each maps to what to write instead.
RESERVED_SBATCH = {
    "signal": "the requeue signal submitit saves and requeues on; set signal_delay_s",
    "requeue": "jobs must stay requeueable for requeue with resume; set max_requeues",
    "no-requeue": "jobs must stay requeueable for requeue with resume; set max_requeues: 0 to never requeue",
    "array": "each table is one job array; set array_parallelism",
    "output": "the job logs `reproduce logs` reads", "error": "the job logs `reproduce logs` reads",
    "open-mode": "the job logs keep every attempt", "job-name": "the suite names its jobs",
    "time": "set time_min", "partition": "set partition", "account": "set account", "qos": "set qos",
    "nodes": "set nodes", "cpus-per-task": "set cpus_per_task", "mem": "set mem_gb",
    "gpus-per-node": "the profile's gpus decide it", "gpus": "the profile's gpus decide it",
    "ntasks-per-node": "the profile's processes decide it", "ntasks": "the profile's processes decide it",
}
KEYS = {"name", "partition", "account", "qos", "gpus_per_node", "nodes", "cpus_per_task", "mem_gb", "time_min",
        "array_parallelism", "max_requeues", "signal_delay_s", "sbatch_extra", "setup", "description",
        "weights_cache"}


@dataclass
class Cluster:
    name: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = 0
    nodes: int = 1
    cpus_per_task: int = 2
    mem_gb: float = 16
    time_min: int = 60
    array_parallelism: int = 8
    max_requeues: int = 3
    # SLURM signals the job this long before its time limit; submitit then
    # saves (the last mmengine checkpoint is the state) and requeues it.
    signal_delay_s: int = 120
    sbatch_extra: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    description: str = ""
    # Where `reproduce run` puts the pretrained weights the jobs read (a
    # TORCH_HOME: hub/checkpoints/<file>); a folder every compute node sees.
    # Default: WORKDIR/.reproduce/weights.
    weights_cache: str | None = None
    file: str | None = None

    def torch_home(self, workdir: Path) -> Path:
        return Path(self.weights_cache).expanduser() if self.weights_cache else workdir / ".reproduce" / "weights"

    @cached_property
    def backend(self) -> "Backend":
        """Where this cluster's jobs go (``backends.for_cluster``): made once, so admitting and
        submitting ask one backend, which reads the cluster's configuration once."""
        from reproduce.backends import for_cluster
        return for_cluster(self)

    @property
    def is_local(self) -> bool:
        return self.name == "local"


def available_clusters(cluster_dir: Path = CLUSTER_DIR) -> list[str]:
    return ["local", *sorted(p.stem for p in cluster_dir.glob("*.yaml"))]


def load_cluster(name: str, cluster_dir: Path = CLUSTER_DIR) -> Cluster:
    if name == "local":
        return Cluster(name="local")
    # A name from cluster/, or the path of a profile of the user's own.
    path = Path(name) if name.endswith((".yaml", ".yml")) else cluster_dir / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown cluster {name!r}", hint=f"known: {', '.join(available_clusters(cluster_dir))}; "
                        f"add one as {path}")
    file = str(path)
    data = mapping(load_yaml(path) or {}, file, "a cluster profile")
    known_keys(data, KEYS, file)
    for key in ("gpus_per_node", "nodes", "cpus_per_task", "time_min", "array_parallelism", "max_requeues",
                "signal_delay_s"):
        integer(data, key, file, default=0)
    data["name"] = data.get("name", path.stem)
    if data.get("weights_cache") is not None and not isinstance(data["weights_cache"], str):
        raise UserError("expected a folder path", file=str(path), field="weights_cache")
    _check_sbatch_extra(data.get("sbatch_extra", {}), str(path))
    _check_setup(data.get("setup", []), str(path))
    return Cluster(**data, file=str(path))


def _check_sbatch_extra(extra: Any, path: str) -> None:
    if not isinstance(extra, dict):
        raise UserError("expected a mapping of sbatch option to value", file=path, field="sbatch_extra",
                        hint="e.g. sbatch_extra: {constraint: a100, exclusive: true}")
    for key, value in extra.items():
        if not isinstance(key, str) or not key.strip("-"):
            raise UserError(f"option {key!r} is not an sbatch option name", file=path, field="sbatch_extra")
        option = key.strip().lstrip("-").replace("_", "-").lower()
        if option in RESERVED_SBATCH:
            raise UserError(f"option {key!r} is set by the suite and cannot be overridden", file=path,
                            field="sbatch_extra", hint=RESERVED_SBATCH[option])
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"option {key!r} needs a single value, got {value!r}", file=path,
                            field="sbatch_extra", hint=f"e.g. {key}: value, or {key}: true for a flag")


def _check_setup(setup: Any, path: str) -> None:
    """A list of shell lines: a plain string would become one sbatch line per character."""
    if isinstance(setup, str):
        raise UserError("expected a list of shell lines, got a string", file=path, field="setup",
                        hint=f"write setup: [{setup.strip().splitlines()[0][:60]!r}], one item per line")
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        raise UserError(f"expected a list of shell lines, got {setup!r}"[:200], file=path, field="setup")
