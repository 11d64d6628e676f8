"""A local job waits for its slot before its controller starts.

``reproduce run --parallel N`` trains N local runs at a time: each local job
takes one of N machine-wide slots (``flock`` on ``slot-I.lock``, released by
the kernel when the process ends). The wait must come before submitit's
local controller starts, because the controller's clock is the job's time
limit: a job that waited inside the controller (as it did) spent its limit
queued and could time out without ever training.

    python -m reproduce.backends.local_slot SLOT_DIR SLOTS -- CONTROLLER_COMMAND...

waits for a free slot, then ``exec``s the controller in the same process
(the pid ``reproduce`` recorded, the same start time), holding the slot's
lock until the controller ends and telling the job its slot in
``MUSU_LOCAL_SLOT`` (which GPUs are its own).
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

SLOT_ENV = "MUSU_LOCAL_SLOT"


def acquire(slot_dir: str | os.PathLike, slots: int, poll: float = 1.0) -> tuple[int, int]:
    """Block until one of ``slots`` slots is free; its index and the open descriptor holding it."""
    Path(slot_dir).mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(slots):
            fd = os.open(Path(slot_dir) / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return i, fd
        time.sleep(poll)


def command(slot_dir: str | os.PathLike, slots: int, controller: list[str]) -> list[str]:
    """The controller's command line, behind the wait for a slot."""
    return [sys.executable, "-m", "reproduce.backends.local_slot", str(slot_dir), str(slots), "--", *controller]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    slot_dir, slots, sep, *controller = argv
    if sep != "--" or not controller:
        raise SystemExit("usage: python -m reproduce.backends.local_slot SLOT_DIR SLOTS -- COMMAND...")
    index, fd = acquire(slot_dir, int(slots))
    os.set_inheritable(fd, True)  # the controller holds the slot until it ends
    os.environ[SLOT_ENV] = str(index)
    os.execvp(controller[0], controller)


if __name__ == "__main__":
    main()
