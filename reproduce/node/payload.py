"""The one message between the stages that submit and the job that trains.

``reproduce run`` builds a ``Payload`` per run, the backend (``backends``) pickles it
into the job (submitit), and ``job.run_training`` reads it there. Requeues
resubmit the very same object, so a requeued attempt trains the same run.
It holds paths and names, never a secret: a tracking URI's credentials travel
in the environment (``credentials.public``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RowKey = tuple[str, str]  # (table, row): row names may hold "/" (alpha-1/3), so rows are never joined into one string


def row_text(row: RowKey) -> str:
    """``table1/alpha-1/3``: a row as people read and type it."""
    return f"{row[0]}/{row[1]}"


# mmengine's name for its launcher that reads a SLURM task's rank (SLURM_PROCID): several
# processes of one run, DDP inside the job. A launcher, not the backend that ran the job.
DDP_LAUNCHER = "slurm"


@dataclass(frozen=True)
class Payload:
    """Everything a job needs to train one run, and nothing it would have to look up."""

    config_hash: str
    config: str                      # a config name (musu.configs.config_path resolves it)
    options: dict[str, Any]          # dotted-key overrides: exactly the options the run's hash was made from
    profile: str
    rows: tuple[RowKey, ...]
    seed: int
    tracking_uri: str
    work_dir: str
    data_root: str = ""              # where this job reads the dataset (no part of the run's identity)
    config_dirs: tuple[str, ...] = ()
    launcher: str = "none"           # DDP_LAUNCHER: one process per task, DDP inside the job
    gpus: int = 0
    processes: int = 1
    torch_home: str = ""             # the weights cache `reproduce run` filled; jobs never download
    signal_delay_s: int = 120        # SLURM's warning before the time limit
    slot_dir: str = ""               # local jobs: where the machine-wide slot locks live
    slots: int = 1                   # local jobs: how many train at once
    local_gpu_ids: tuple[str, ...] = ()
    rerun_of: str = ""               # `run --rerun-stale`: the stale finished MLflow run this job trains
                                     # again (it trains although that run finished)
    stale_libraries: bool = False    # `--stale-libraries`: a rerun's job retrains unless its own libraries
                                     # are those the finished run recorded
    fps_images: int = 0              # Table 7's FPS: images timed (0: the paper's 200 on a GPU, 20 on a CPU)
    fps_warmup: int = -1             # ... after this many untimed ones (-1: 10)

    @property
    def run_name(self) -> str:
        return f"{row_text(self.rows[0])}@{self.config_hash}"

    @property
    def tables(self) -> list[str]:
        return sorted({t for t, _ in self.rows})
