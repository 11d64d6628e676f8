"""From tables and a profile to runs: resolved configs, hashes, costs.

A run is identified by the hash of its fully resolved config (model, data
files, schedule, seed; ``config_hash``), so a row shared by several tables (the
default MuSu setting is in Tables 1-5) is one run, trained once, and a finished
run is never trained again whatever table asks for it. A job trains exactly the
options that were hashed (``Run.options``); only the dataset's location is
added there (``musu.train.set_data_root``), and the code that trained it is
recorded beside it (``reproduce.node.fingerprint``: stale, not another run).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.errors import UserError, first_line
from reproduce.node.weights import pretrained
from reproduce.sweep.profiles import Profile, load_profile
from reproduce.sweep.spec import SWEEPS_DIR, Row, Table, available_tables, load_tables
from reproduce.paths import REPO, cache_dir

# The modules whose code decides what a plan holds (its runs, options and hashes): a change
# to any of them invalidates the plan cache. tests/test_plan.py checks the list against
# the modules this one imports.
PLAN_MODULES = ("reproduce.sweep.plan", "reproduce.sweep.spec", "reproduce.sweep.profiles", "reproduce.schema",
                "reproduce.metrics", "reproduce.paths", "reproduce.node.weights",
                "reproduce.errors",
                "musu.core.switches", "musu.configs", "musu.data.synthetic")


@dataclass
class Run:
    """One training run: the rows it serves, its config and its identity."""

    config_hash: str
    config_name: str
    options: dict[str, Any]
    profile: str
    seed: int
    rows: list[tuple[str, str]] = field(default_factory=list)  # (table, row)
    gpu_hours: float = 0.0
    max_iters: int = 0
    weights: tuple[str, ...] = ()  # the pretrained checkpoints its config names (fetched before submitting)

    def to_json(self) -> dict[str, Any]:
        """What ``plan --json`` prints of a run."""
        return dict(config_hash=self.config_hash, config=self.config_name, profile=self.profile, seed=self.seed,
                    rows=[list(r) for r in self.rows], overrides=self.options, max_iters=self.max_iters,
                    gpu_hours=self.gpu_hours, weights=list(self.weights))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Run":
        return cls(config_hash=data["config_hash"], config_name=data["config"], options=data["overrides"],
                   profile=data["profile"], seed=data["seed"], rows=[(t, r) for t, r in data["rows"]],
                   gpu_hours=data["gpu_hours"], max_iters=data["max_iters"], weights=tuple(data.get("weights", ())))


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.10g}")
    return obj if isinstance(obj, (str, int, bool, type(None))) else str(obj)


def config_hash(resolved: dict[str, Any]) -> str:
    text = json.dumps(_canonical(resolved), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dataset_options(profile: Profile, test_split: bool = False) -> dict[str, Any]:
    """Config overrides for the profile's dataset: which files each split reads and, for the
    synthetic set, its generator's settings, all part of a run's identity. Where the
    dataset lies is not: each job points its config at the root it reads
    (``musu.train.set_data_root``), so a run is the same run in any work dir.
    ``test_split``: the row's table reports an unlabeled split (its ``eval_split:``, Table 6's
    test-dev); only then, and only where the profile names one (``test_info``), does the job
    write that split's detections. Every other row skips a pass over 20k images it does not report."""
    ds = profile.dataset
    opts: dict[str, Any] = {}
    test = "test" if test_split and ds.get("test_info") else "val"
    for split, loader in (("train", "train_dataloader"), ("val", "val_dataloader"), (test, "test_dataloader")):
        opts[f"{loader}.dataset.ann_file"] = ds["test_info"] if split == "test" else ds[f"{split}_ann"]
        if ds.get(f"{split}_img"):
            opts[f"{loader}.dataset.data_prefix"] = dict(img=ds[f"{split}_img"])
    if test == "test":  # labels unknown: the test split's detections are written, not scored (COCO's server scores them)
        opts["test_dataloader.dataset.test_mode"] = True
        opts["test_evaluator.format_only"] = True
    if ds["type"] == "synthetic":
        # The data a synthetic run trains on is its generator's settings: part of the run's identity.
        from musu.data import SyntheticSpec
        try:
            opts["synthetic_dataset"] = SyntheticSpec(**(ds.get("generate") or {})).settings()
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc), file=profile.file, field="dataset.generate") from None
    if profile.gpus:
        opts["train_dataloader.batch_size"] = profile.images_per_gpu
    if profile.processes > 1:  # the effective batch is processes x images per process
        opts["world_size"] = profile.processes
    return opts


class Planner:
    """Resolves rows with one parse of each distinct config file."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._parsed: dict[str, Any] = {}

    def _base(self, name: str):
        if name not in self._parsed:
            from mmengine.config import Config

            from musu.configs import config_path
            try:
                path = config_path(name, self.profile.config_dirs)
            except FileNotFoundError as exc:
                raise UserError(str(exc), file=self.profile.file, field="configs") from None
            try:
                self._parsed[name] = Config.fromfile(str(path), import_custom_modules=False)
            except Exception as exc:  # noqa: BLE001 - a config is Python: any error is the config's
                raise UserError(f"config {name} ({path}) does not parse: {type(exc).__name__}: {first_line(exc)}",
                                file=self.profile.file, field="configs", hint="fix the config file") from None
        return self._parsed[name]

    def options_for(self, row: Row, seed: int, test_split: bool = False) -> tuple[str, dict[str, Any]]:
        choice = self.profile.choose(row.key, row.name, row.table)
        options: dict[str, Any] = {}
        for patch in choice.patches:
            options.update(self.profile.patches[patch])
        options.update(self.profile.cfg_options)
        options.update(dataset_options(self.profile, test_split))
        from musu.core.switches import Switches
        for switch, value in sorted(row.switches.items()):
            options[Switches.config_path(switch)] = value
        options["randomness"] = dict(seed=seed, deterministic=False)
        return choice.config, options

    def resolve(self, config_name: str, options: dict[str, Any]):
        cfg = copy.deepcopy(self._base(config_name))
        try:
            cfg.merge_from_dict(copy.deepcopy(options))
        except (TypeError, KeyError, ValueError) as exc:
            raise UserError(f"the overrides do not merge into config {config_name}: {first_line(exc)}",
                            file=self.profile.file, field="cfg_options",
                            hint="a dict replacing a non-dict value needs _delete_: true") from None
        _spell_out_switches(cfg, self.profile.file)
        return cfg

    def plan(self, tables: list[Table]) -> list[Run]:
        """The runs of ``tables``: one per distinct resolved config, serving every row that resolves to it."""
        runs: dict[str, Run] = {}
        for table in tables:
            for row in table.rows:
                if not row.trained:
                    continue
                for seed in range(row.seeds):
                    name, options = self.options_for(row, seed, test_split=table.eval_split is not None)
                    cfg = self.resolve(name, options)
                    resolved = cfg.to_dict()
                    h = config_hash(resolved)
                    run = runs.get(h)
                    if run is None:
                        iters = int(resolved.get("train_cfg", {}).get("max_iters") or 0)
                        run = runs[h] = Run(config_hash=h, config_name=name, options=options,
                                            profile=self.profile.name, seed=seed, max_iters=iters,
                                            gpu_hours=self._cost(row, iters), weights=tuple(pretrained(cfg)))
                    if (table.name, row.name) not in run.rows:
                        run.rows.append((table.name, row.name))
        return list(runs.values())

    def _cost(self, row: Row, iters: int) -> float:
        cost = self.profile.cost
        anchors = int(row.switches.get("num_anchors", 1))
        factor = 1.0 + float(cost.get("per_extra_anchor", 0.0)) * (anchors - 1)
        return iters * self.profile.sec_per_iter(row.backbone) * factor * max(self.profile.gpus, 1) / 3600.0


def _spell_out_switches(cfg, file: str) -> None:
    """Write every MuSu switch into the config, defaults included: a row that
    sets alpha=1/3 and one that leaves it alone are one run (one hash), and the
    tracked params name every setting."""
    head = cfg.get("model", {}).get("bbox_head", {})
    if head.get("type") != "MuSuHead":
        return
    from musu.core.switches import Switches
    given = {k: head[k] for k in Switches.head_fields() if head.get(k) is not None}
    try:
        switches = Switches(**dict(head.get("assigner") or {}), **given)
    except (TypeError, ValueError) as exc:
        raise UserError(f"MuSu switches: {first_line(exc)}", file=file, field="cfg_options") from None
    head["assigner"] = switches.assigner()
    for name in Switches.head_fields():
        head[name] = getattr(switches, name)


def _mmdet_version() -> str:
    try:
        from importlib.metadata import version
        return version("mmdet")
    except Exception:  # noqa: BLE001
        return "unknown"


def _cache_key(profile: str, tables: str, sweeps: Path, switches: list[str] | None,
               cfg_options: list[str] | None, config_dirs: list[Path] | None) -> str | None:
    """Everything a plan is made of, read as bytes before anything is parsed: the command
    line, every file under the sweeps folder and the spec or profile files it names, the
    metric vocabulary, every config file, mmdet's version and the code of every module
    that shapes a plan (``PLAN_MODULES``). None when a named file is not there (the
    planner says what is wrong)."""
    import importlib.util

    from musu.configs import CONFIG_DIR
    h = hashlib.sha256()
    h.update(json.dumps([profile, tables, str(sweeps.resolve()), switches, cfg_options,
                         [str(Path(d).resolve()) for d in config_dirs or []], str(Path.cwd()), _mmdet_version()]
                        ).encode())
    named = [Path(x.strip()) for x in [profile, *tables.split(",")] if "/" in x or x.strip().endswith((".yaml", ".yml"))
             or Path(x.strip()).is_dir()]
    folders = [sweeps, REPO / "sweeps" / "vocabulary", *(p for p in named if p.is_dir())]
    files = [p for p in named if not p.is_dir()]
    if any(not p.is_file() for p in files) or any(not Path(d).is_dir() for d in config_dirs or []):
        return None
    code = [Path(importlib.util.find_spec(m).origin) for m in PLAN_MODULES]  # found, not imported
    for path in [*files, *code, *(p for d in folders for p in sorted(d.rglob("*.y*ml"))),
                 *sorted(CONFIG_DIR.rglob("*.py")), *(p for d in config_dirs or [] for p in sorted(Path(d).rglob("*.py")))]:
        h.update(str(path).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:24]


def _cache_load(key: str | None) -> tuple[Profile, list[Table], list[Run]] | None:
    if key is None:
        return None
    try:
        with open(cache_dir() / f"{key}.pickle", "rb") as fh:
            return pickle.load(fh)  # the user's own cache folder, keyed by the code that reads it
    except Exception:  # noqa: BLE001 - missing, truncated or from other code: planned again
        return None


def _cache_store(key: str | None, plan: tuple[Profile, list[Table], list[Run]]) -> None:
    if key is None:
        return
    path = cache_dir() / f"{key}.pickle"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(plan))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs speed


def plan_tables(profile: str, tables: str, sweeps: Path | None = None, switches: list[str] | None = None,
                cfg_options: list[str] | None = None, config_dirs: list[Path] | None = None
                ) -> tuple[Profile, list[Table], list[Run]]:
    """The profile, the tables (``table1,table6``, ``all``, or spec files) and their runs.

    ``switches`` (``b=0.2``) set a MuSu switch on every MuSu row, ``cfg_options``
    (``optim_wrapper.optimizer.lr=0.02``) any config key on every row; both
    change the config hash, so runs made with them never mix with runs made without.
    """
    sweeps = sweeps or SWEEPS_DIR
    key = _cache_key(profile, tables, sweeps, switches, cfg_options, config_dirs)
    cached = _cache_load(key)  # a command after the first parses nothing
    if cached is not None:
        return cached
    prof = load_profile(profile, sweeps)
    tabs = prof.select(load_tables(tables, sweeps), named={t.strip() for t in tables.split(",")},
                       suite=set(available_tables(sweeps)))
    if config_dirs:
        missing = [str(d) for d in config_dirs if not Path(d).is_dir()]
        if missing:
            raise UserError(f"--configs {missing[0]} is not a folder", hint="name a folder of mmengine config files")
        prof = dataclasses.replace(prof, config_dirs=tuple(str(Path(d).resolve()) for d in config_dirs))
    if cfg_options:
        prof = dataclasses.replace(prof, cfg_options={**prof.cfg_options, **parse_assignments(cfg_options,
                                                                                            "--cfg-options")})
    if switches:
        tabs = [with_switches(t, parse_assignments(switches, "--set")) for t in tabs]
    plan = prof, tabs, Planner(prof).plan(tabs)
    _cache_store(key, plan)
    return plan


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings; values read as YAML (0.2, true, null, [1, 2])."""
    from reproduce.schema import MalformedYaml, load_yaml_text
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {item!r} is not KEY=VALUE", hint=f"e.g. {flag} b=0.2")
        try:
            out[key.strip()] = load_yaml_text(value, f"{flag} {key.strip()}") if value.strip() else None
        except MalformedYaml:
            out[key.strip()] = value  # not YAML: the text as it was typed
    return out


def with_switches(table: Table, values: dict[str, Any]) -> Table:
    """The table with ``values`` set on each of its MuSu rows (``assigner.b`` and ``b`` both name b)."""
    from musu.core.switches import Switches
    checked = {}
    for key, value in values.items():
        name = key.removeprefix("assigner.")
        if name not in Switches.names():
            raise UserError(f"--set {key}: not a MuSu switch", hint=f"switches: {', '.join(Switches.names())}")
        try:
            checked[name] = Switches.check(name, value)
        except ValueError as exc:
            raise UserError(f"--set {key}={value}: {exc}") from None
    rows = [dataclasses.replace(r, switches={**r.switches, **checked}) if r.method == "musu" else r
            for r in table.rows]
    return dataclasses.replace(table, rows=rows)
