"""Profiles (``sweeps/profiles/*.yaml``): where and at what scale rows train.

A profile maps each row's (method/backbone/schedule) to a config, names the
dataset, the GPUs per run and a cost model. It is data, so a user adds one
(one GPU and a COCO subset, say) without touching code.
"""
from __future__ import annotations

import fnmatch
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.errors import UserError
from reproduce.schema import integer, known_keys, load_yaml, mapping
from reproduce.sweep.spec import SWEEPS_DIR, Table

PROFILE_KEYS = {"name", "description", "dataset", "gpus", "processes", "images_per_gpu", "configs", "cfg_options",
                "cost", "patches", "seeds", "rows", "fps"}
FPS_KEYS = {"images", "warmup"}
# test_info/test_img: an unlabeled split (COCO test-dev's image-info file): jobs write its
# detections in the COCO evaluation server's format beside the validation numbers
DATASET_KEYS = {"type", "root", "train_ann", "val_ann", "train_img", "val_img", "generate", "test_info", "test_img"}


@dataclass
class ConfigChoice:
    config: str
    patches: list[str] = field(default_factory=list)


@dataclass
class Profile:
    name: str
    description: str
    dataset: dict[str, Any]
    gpus: int
    images_per_gpu: int
    # Training processes per run (DDP): one per GPU, or N on CPU (gloo) with gpus: 0.
    processes: int
    configs: dict[str, ConfigChoice]
    cfg_options: dict[str, Any]
    patches: dict[str, dict[str, Any]]
    cost: dict[str, Any]
    file: str
    # Folders of the user's own configs, named on the command line (--configs DIR):
    # with the suite's configs and mmdet's, the only places a config name may resolve.
    config_dirs: tuple[str, ...] = ()
    # Seeds per row at this scale (a row's own ``seeds:`` when larger): small-scale numbers
    # mean something only beside their spread.
    seeds: int = 1
    # The rows this profile is sized for, by table (None: every row). A CPU profile
    # that must fit in an hour trains the rows whose orderings it exists to show.
    rows: dict[str, list[str]] | None = None
    # Table 7's FPS: images timed after a warm-up (``fps: {images, warmup}``); 0 is the job's
    # default for its device (the paper's 200 on a GPU, 20 on a CPU; a warm-up of 10).
    fps_images: int = 0
    fps_warmup: int = -1

    def select(self, tables: list[Table], named: set[str], suite: set[str]) -> list[Table]:
        """``tables`` as this profile trains them: of the suite's tables (``suite``), only its
        ``rows:``; every row with its seeds. A suite table the user named (``named``) that the
        profile trains no row of is an error, one that came with ``all`` is left out, and a
        spec of the user's own is trained whole."""
        out = []
        for table in tables:
            if self.rows is not None and table.name in suite:
                if table.name not in self.rows:
                    if table.name in named:
                        raise UserError(f"profile {self.name!r} trains no row of {table.name}",
                                        file=self.file, field="rows",
                                        hint=f"its tables: {', '.join(self.rows)}; or choose another --profile")
                    continue
                wanted = self.rows[table.name]
                known = [r.name for r in table.rows]
                unknown = [w for w in wanted if w not in known]
                if unknown:
                    raise UserError(f"{table.name} has no row {unknown[0]!r}", file=self.file,
                                    field=f"rows.{table.name}", hint=f"its rows: {', '.join(known)}")
                table = dataclasses.replace(table, rows=[r for r in table.rows if r.name in wanted])
            if self.seeds > 1:
                table = dataclasses.replace(table, rows=[dataclasses.replace(r, seeds=max(r.seeds, self.seeds))
                                                         for r in table.rows])
            out.append(table)
        return out

    def choose(self, key: str, row_name: str, table_file: str) -> ConfigChoice:
        for pattern, choice in self.configs.items():
            if fnmatch.fnmatchcase(key, pattern):
                return choice
        raise UserError(f"profile {self.name!r} has no config for {key}", file=table_file, row=row_name,
                        field="method", hint=f"add a '{key}' entry under configs: in {self.file}")

    @property
    def unlike_paper(self) -> str:
        """Why this profile's numbers cannot be set against the paper's ('' when they can): the
        paper's are COCO's, and AP on other data minus COCO's AP measures no gap to close."""
        if self.dataset["type"] == "coco":
            return ""
        return (f"profile {self.name} trains on {self.dataset['type']} data and the paper's numbers are COCO's, "
                "so their difference measures nothing; the orderings between rows are what it can test")

    def sec_per_iter(self, backbone: str) -> float:
        table = self.cost.get("sec_per_iter", {})
        for pattern, value in table.items():
            if fnmatch.fnmatchcase(backbone, pattern):
                return float(value)
        return 1.0


def available_profiles(sweeps_dir: Path = SWEEPS_DIR) -> list[str]:
    return sorted(p.stem for p in (sweeps_dir / "profiles").glob("*.yaml"))


def load_profile(name: str, sweeps_dir: Path = SWEEPS_DIR) -> Profile:
    """A profile of the suite's by name, or the user's own by its path (``--profile mine.yaml``)."""
    known = available_profiles(sweeps_dir)
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"no profile file {path}", hint=f"give an existing file, or one of: {', '.join(known)}")
    elif name not in known:
        raise UserError(f"unknown profile {name!r}", hint=f"known profiles: {', '.join(known)}; "
                        f"add one as {sweeps_dir / 'profiles' / (name + '.yaml')}, or give a file path")
    else:
        path = sweeps_dir / "profiles" / f"{name}.yaml"
    file = str(path)
    data = mapping(load_yaml(path), file, "a profile")
    known_keys(data, PROFILE_KEYS, file)
    for key in ("dataset", "configs"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise UserError("missing or not a mapping", file=file, field=key)
    ds = data["dataset"]
    known_keys(ds, DATASET_KEYS, file, prefix="dataset.")
    if ds.get("type") not in ("coco", "synthetic"):
        raise UserError(f"must be coco or synthetic, got {ds.get('type')!r}", file=file, field="dataset.type")
    for key in ("root", "train_ann", "val_ann"):
        if not isinstance(ds.get(key), str):
            raise UserError("missing (a path)", file=file, field=f"dataset.{key}")
    gpus = integer(data, "gpus", file, default=0)
    processes = integer(data, "processes", file, default=max(gpus, 1), minimum=1)
    if gpus and processes != gpus:
        raise UserError(f"a run on {gpus} GPU(s) runs one process per GPU, got processes: {processes}", file=file,
                        field="processes", hint=f"drop processes, or set it to {gpus}")
    if not gpus and "images_per_gpu" in data:
        # Applied only to GPU runs: with gpus: 0 it changed nothing (a profile said batch 8, trained at 4).
        raise UserError("images_per_gpu sets the batch of a run on GPUs; with gpus: 0 it would change nothing",
                        file=file, field="images_per_gpu",
                        hint="drop it, and set the batch with cfg_options: {train_dataloader.batch_size: N}")
    ipg = integer(data, "images_per_gpu", file, default=2, minimum=1)
    patches = data.get("patches") or {}
    if not isinstance(patches, dict) or any(not isinstance(v, dict) for v in patches.values()):
        raise UserError("expected a mapping of name to config overrides", file=file, field="patches")
    configs = {}
    for key, value in data["configs"].items():
        if isinstance(value, str):
            choice = ConfigChoice(value)
        elif isinstance(value, dict) and isinstance(value.get("config"), str) and set(value) <= {"config", "patches"}:
            choice = ConfigChoice(value["config"], list(value.get("patches") or []))
        else:
            raise UserError("expected a config name or {config: NAME, patches: [...]}", file=file,
                            field=f"configs.{key}")
        for patch in choice.patches:
            if patch not in patches:
                raise UserError(f"unknown patch {patch!r}", file=file, field=f"configs.{key}",
                                hint=f"define it under patches: ({', '.join(patches) or 'none defined'})")
        configs[str(key)] = choice
    cfg_options = data.get("cfg_options") or {}
    if not isinstance(cfg_options, dict):
        raise UserError("expected a mapping of dotted config keys to values", file=file, field="cfg_options")
    cost = data.get("cost") or {}
    if not isinstance(cost, dict):
        raise UserError("expected a mapping", file=file, field="cost")
    seeds = integer(data, "seeds", file, default=1, minimum=1, maximum=100)
    rows = data.get("rows")
    if rows is not None and (not isinstance(rows, dict) or not rows or any(
            not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v) for v in rows.values())):
        raise UserError("expected a mapping of table name to a list of row names", file=file, field="rows",
                        hint="e.g. rows: {table1: [fcos, v-q]}; drop rows: to train every row")
    fps = data.get("fps") or {}
    if not isinstance(fps, dict):
        raise UserError("expected {images: N, warmup: M}", file=file, field="fps")
    known_keys(fps, FPS_KEYS, file, prefix="fps.")
    fps_images = integer(fps, "images", file, default=0, minimum=1, prefix="fps.") if "images" in fps else 0
    fps_warmup = integer(fps, "warmup", file, default=-1, minimum=0, prefix="fps.") if "warmup" in fps else -1
    name = data.get("name", path.stem)
    if name != path.stem:
        # Runs are tracked under the profile's name: a copy of paper.yaml changed to one GPU
        # but still named "paper" would count its results as the paper setting's.
        raise UserError(f"name {name!r} differs from the file's name {path.stem!r}: runs are tracked by profile "
                        "name, so this profile would share another's runs", file=file, field="name",
                        hint=f"set name: {path.stem}, or drop name:")
    return Profile(name=name, description=str(data.get("description", "")), dataset=ds,
                   gpus=gpus, images_per_gpu=ipg, processes=processes, configs=configs, cfg_options=cfg_options, patches=patches,
                   cost=cost, file=file, seeds=seeds, fps_images=fps_images, fps_warmup=fps_warmup,
                   rows={str(k): [str(x) for x in v] for k, v in rows.items()} if rows is not None else None)
