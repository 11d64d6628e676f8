"""`reproduce plan`: the paper's runs, shared rows, hashes, clear errors."""
import json

import pytest

from reproduce.cli import main


def plan_json(capsys, *args):
    """``plan --json``, each run's rows (``[table, row]`` pairs) written ``table/row`` for short asserts."""
    assert main(["plan", *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for run in out["runs"]:
        assert all(isinstance(r, list) and len(r) == 2 for r in run["rows"]), run["rows"]
        run["rows"] = ["/".join(r) for r in run["rows"]]
    return out


def test_the_plan_cache_key_covers_every_module_that_shapes_a_plan():
    """Issue 12: the plan cache's key names the code of every suite module the planner imports."""
    import ast
    import importlib.util

    from reproduce.sweep.plan import PLAN_MODULES
    seen, todo = set(), ["reproduce.sweep.plan"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found = importlib.util.find_spec(name)
        tree = ast.parse(open(found.origin).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                pkg = name if found.submodule_search_locations else name.rsplit(".", 1)[0]
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), pkg)
                todo += [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("musu", "reproduce")):
                todo.append(node.module)  # and each name that is a module of its own (from reproduce import x)
                todo += [f"{node.module}.{a.name}" for a in node.names
                         if importlib.util.find_spec(node.module) and importlib.util.find_spec(
                             node.module).submodule_search_locations
                         and importlib.util.find_spec(f"{node.module}.{a.name}") is not None]
    ours = {m for m in seen if m.startswith(("reproduce", "musu")) and importlib.util.find_spec(m) is not None}
    # musu.data's generator and the switches are what the plan reads of musu; the configs package finds files
    assert ours - {"musu", "musu.data", "musu.core"} <= set(PLAN_MODULES), sorted(ours - set(PLAN_MODULES))


def test_paper_plan_counts_and_shared_rows(capsys):
    out = plan_json(capsys, "all", "--profile", "paper")
    # 38 trained rows over 8 tables; the default MuSu setting serves 7 of them,
    # Table 7 reuses Table 1's FCOS and Table 5's #A runs, Table 5 reuses Table 1's alpha=1.
    assert out["rows"] == 38
    assert out["total_runs"] == 26
    by_rows = {tuple(r["rows"]): r for r in out["runs"]}
    default = next(r for r in out["runs"] if "table1/alpha-1/3" in r["rows"])
    assert sorted(default["rows"]) == sorted(["soft_hard/soft", "table1/alpha-1/3", "table2/b-0.10",
                                              "table3/tau-adaptive", "table4/ratio-2", "table5/alpha-1/3-A1",
                                              "table7/musu-A1"])
    fcos = next(r for r in out["runs"] if "table1/fcos" in r["rows"])
    assert fcos["rows"] == ["table1/fcos", "table7/fcos"] and fcos["config"] == "fcos_r50_1x_coco"
    a1 = next(r for r in out["runs"] if "table1/alpha-1.0" in r["rows"])
    assert a1["rows"] == ["table1/alpha-1.0", "table5/alpha-1.0-A1"]
    r101 = next(r for r in out["runs"] if "table6/musu-r101" in r["rows"])
    assert r101["config"] == "musu_r101_ms-640-800_2x_coco" and r101["max_iters"] == 180000
    assert r101["overrides"]["model.bbox_head.num_anchors"] == 3
    dcn = next(r for r in out["runs"] if "table6/musu-r101-dcn" in r["rows"])
    assert dcn["config"] == "musu_r101-dcn_ms-640-800_2x_coco"
    assert all(r["max_iters"] == 90000 for r in out["runs"] if r not in (r101, dcn))
    assert len({r["config_hash"] for r in out["runs"]}) == 26
    assert out["total_gpu_hours"] > 1000
    # the dataset's files are in every run's options; where the dataset lies is not (see below)
    assert all(r["overrides"]["val_dataloader.dataset.ann_file"] == "annotations/instances_val2017.json"
               and "train_dataloader.dataset.data_root" not in r["overrides"] for r in out["runs"])
    # Table 1's v = p and v = q rows "assign the same weights for each head": tau 1:1 (issue 25, item 4)
    for row in ("table1/v-p", "table1/v-q"):
        run = next(r for r in out["runs"] if row in r["rows"])
        assert float(run["overrides"]["model.bbox_head.assigner.tau_ratio"]) == 1.0, run["overrides"]
    # Issue 25, item 5: Table 6's runs (eval_split: test-dev) also write COCO test-dev's detections
    # for the evaluation server; no other table's run reads the test split
    for run in out["runs"]:
        test_dev = run in (r101, dcn)
        assert bool(run["overrides"].get("test_evaluator.format_only")) == test_dev, run["rows"]
        assert run["overrides"]["test_dataloader.dataset.ann_file"] == (
            "annotations/image_info_test-dev2017.json" if test_dev else "annotations/instances_val2017.json")


def test_a_missing_test_split_stops_only_the_runs_that_need_it_on_one_line(tmp_path, capsys):
    """Issue 25, item 5: a profile naming a test split it does not have: a table that reports the
    test split stops before anything is submitted, on one line naming the files; others run."""
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path / "spec")
    profile = sweeps / "profiles" / "ci.yaml"
    profile.write_text(profile.read_text().replace(
        "  val_img: val/\n", "  val_img: val/\n  test_info: annotations/image_info_test-dev2017.json\n  test_img: test2017/\n"))
    (sweeps / "dev.yaml").write_text((sweeps / "one.yaml").read_text().replace("table: one", "table: dev\neval_split: test-dev"))
    args = ["--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(tmp_path / "w"), "--no-wait"]
    assert main(["check", "dev", *args[:-1], "--cluster", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image_info_test-dev2017.json does not exist" in err and "test2017.zip" in err, err
    assert main(["run", "dev", *args]) == 2
    err = capsys.readouterr().err
    assert "image_info_test-dev2017.json does not exist" in err and not (tmp_path / "w" / ".reproduce" / "submitit").exists()
    # the same profile's other table neither needs nor reads the test split
    out = plan_json(capsys, "one", *args[:4])
    assert "test_evaluator.format_only" not in out["runs"][0]["overrides"]


def test_a_job_trains_the_options_its_hash_was_made_from_in_any_work_dir(tmp_path):
    """Issue 11, item 3: the plan hashed the dataset with the profile's relative root, `run`
    merged the absolute root over it, so the options trained were not the options hashed
    (and a job could not be traced back to its hash). Now a payload's options are the run's,
    the job adds only where the data lies (musu.train.set_data_root), and the same run
    planned from two work dirs is one run."""
    from conftest import make_sweeps

    from reproduce.sweep import datasets
    from reproduce.backends.clusters import load_cluster
    from reproduce.sweep.plan import Planner, config_hash, plan_tables
    from reproduce.sweep.submission import Submission
    sweeps = make_sweeps(tmp_path)
    profile, _, (run,) = plan_tables("ci", "one", sweeps)
    payloads = []
    for work in (tmp_path / "a", tmp_path / "b"):
        root = datasets.prepare(profile, work)
        payloads.append(Submission(profile, load_cluster("local"), work, "sqlite:///x", root, work / "w")
                        .payload(run))
    assert payloads[0].options == payloads[1].options == run.options
    assert payloads[0].data_root != payloads[1].data_root
    planner = Planner(profile)
    assert config_hash(planner.resolve(run.config_name, payloads[0].options).to_dict()) == run.config_hash
    from musu.train import load_config
    cfg = load_config(run.config_name, payloads[0].options, data_root=payloads[0].data_root)
    assert cfg.train_dataloader.dataset.data_root == payloads[0].data_root + "/"
    assert cfg.val_evaluator.ann_file == payloads[0].data_root + "/annotations/val.json"


def test_hash_is_stable_and_sensitive(capsys):
    a = plan_json(capsys, "table2", "--profile", "paper")
    b = plan_json(capsys, "table2", "--profile", "paper")
    assert [r["config_hash"] for r in a["runs"]] == [r["config_hash"] for r in b["runs"]]
    assert len({r["config_hash"] for r in a["runs"]}) == 3


def test_smoke_profile_maps_to_tiny_configs(capsys):
    out = plan_json(capsys, "table1", "--profile", "smoke")
    assert out["total_runs"] == 10
    assert {r["config"] for r in out["runs"]} == {"smoke/musu_tiny_synthetic", "smoke/fcos_tiny_synthetic",
                                                   "smoke/fcospp_tiny_synthetic"}
    assert all(r["max_iters"] == 40 for r in out["runs"])


def test_reference_rows_switch_to_trained(tmp_path, capsys):
    sweeps = tmp_path / "sweeps"
    (sweeps / "profiles").mkdir(parents=True)
    from reproduce.sweep.spec import SWEEPS_DIR
    (sweeps / "profiles" / "paper.yaml").write_text((SWEEPS_DIR / "profiles" / "paper.yaml").read_text())
    text = (SWEEPS_DIR / "table6.yaml").read_text().replace(
        "{name: atss-r101, label: \"ATSS [35]\",", "{name: atss-r101, train: true, label: \"ATSS [35]\",")
    (sweeps / "table6.yaml").write_text(text)
    out = plan_json(capsys, "table6", "--profile", "paper", "--sweeps", str(sweeps))
    atss = next(r for r in out["runs"] if r["rows"] == ["table6/atss-r101"])
    assert atss["config"].startswith("mmdet::atss/") and atss["max_iters"] == 180000


@pytest.mark.parametrize("args,needle", [
    (["plan", "table9"], "unknown table 'table9'"),
    (["plan", "table1", "--profile", "nope"], "unknown profile 'nope'"),
])
def test_errors_are_one_line(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


OWN_SPEC = """\
table: mygrid
title: b x tau_ratio, my own
columns: [AP]
defaults: {method: musu, backbone: r50, schedule: 1x}
rows:
  - {name: "b{b}-r{tau_ratio}", grid: {b: [0.1, 0.2], tau_ratio: [1, 2]}}
"""


def test_own_spec_files_and_profiles_sit_beside_the_suite(tmp_path, capsys):
    spec = tmp_path / "mygrid.yaml"
    spec.write_text(OWN_SPEC)
    out = plan_json(capsys, str(spec), "--profile", "smoke")
    assert out["tables"] == ["mygrid"] and out["total_runs"] == 4
    both = plan_json(capsys, f"table1,{spec}", "--profile", "smoke")
    assert both["tables"] == ["table1", "mygrid"]
    # the default MuSu setting (b=0.1, tau_ratio=2) is table1's alpha=1/3 row: one run
    assert any(sorted(r["rows"]) == ["mygrid/b0.1-r2", "table1/alpha-1/3"] for r in both["runs"])
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "mygrid.yaml").write_text(OWN_SPEC)
    assert plan_json(capsys, str(folder), "--profile", "smoke")["tables"] == ["mygrid"]
    profile = tmp_path / "mine.yaml"
    from reproduce.sweep.spec import SWEEPS_DIR
    profile.write_text((SWEEPS_DIR / "profiles" / "smoke.yaml").read_text().replace("name: smoke", "name: mine"))
    assert plan_json(capsys, "table1", "--profile", str(profile))["profile"] == "mine"


def test_a_copied_profile_keeping_the_name_of_another_is_refused(tmp_path, capsys):
    """Issue 11, item 3: a copy of paper.yaml made for one GPU, still named paper,
    would count its runs as the paper setting's."""
    from reproduce.sweep.spec import SWEEPS_DIR
    copy = tmp_path / "paper-1gpu.yaml"
    copy.write_text((SWEEPS_DIR / "profiles" / "paper.yaml").read_text().replace("gpus: 8", "gpus: 1"))
    assert main(["plan", "table1", "--profile", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "name 'paper' differs from the file's name 'paper-1gpu'" in err
    assert "set name: paper-1gpu" in err


def test_images_per_gpu_on_a_cpu_profile_is_refused_on_one_line(tmp_path, capsys):
    """Issue 24, item 1: images_per_gpu changed the batch only with gpus above 0; the signal
    profile said batch 8 with gpus: 0, and trained at the config's 4."""
    from reproduce.sweep.spec import SWEEPS_DIR
    mine = tmp_path / "mine.yaml"
    mine.write_text((SWEEPS_DIR / "profiles" / "smoke.yaml").read_text().replace("name: smoke", "name: mine")
                    .replace("gpus: 0\n", "gpus: 0\nimages_per_gpu: 8\n"))
    assert main(["plan", "table1", "--profile", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "images_per_gpu" in err and "train_dataloader.batch_size" in err, err
    on_gpus = tmp_path / "gpus.yaml"
    on_gpus.write_text(mine.read_text().replace("name: mine", "name: gpus").replace("gpus: 0\n", "gpus: 1\n"))
    (run, *_) = plan_json(capsys, "table1", "--profile", str(on_gpus))["runs"]
    assert run["overrides"]["train_dataloader.batch_size"] == 8  # where it applies, it changes the run


@pytest.mark.parametrize("fps, needle", [("{images: 0}", "fps.images"), ("{frames: 3}", "fps.frames"),
                                          ("[200, 10]", "fps")])
def test_a_bad_fps_field_is_refused_on_one_line(tmp_path, capsys, fps, needle):
    from reproduce.sweep.spec import SWEEPS_DIR
    mine = tmp_path / "mine.yaml"
    mine.write_text((SWEEPS_DIR / "profiles" / "smoke.yaml").read_text().replace("name: smoke", "name: mine")
                    + f"fps: {fps}\n")
    assert main(["plan", "table1", "--profile", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


def test_a_clashing_table_name_is_refused_on_one_line(tmp_path, capsys):
    spec = tmp_path / "table1.yaml"
    spec.write_text(OWN_SPEC.replace("table: mygrid", "table: table1"))
    assert main(["plan", str(spec), "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "table name 'table1' is the suite's table1" in err and "table1.yaml" in err


def test_set_and_cfg_options_change_every_row_and_the_hash(capsys):
    base = plan_json(capsys, "table2", "--profile", "smoke")
    with_b = plan_json(capsys, "table2", "--profile", "smoke", "--set", "assigner.tau_ratio=1", "num_anchors=2")
    assert all(r["overrides"]["model.bbox_head.assigner.tau_ratio"] == 1.0 for r in with_b["runs"])
    assert all(r["overrides"]["model.bbox_head.num_anchors"] == 2 for r in with_b["runs"])
    assert not {r["config_hash"] for r in base["runs"]} & {r["config_hash"] for r in with_b["runs"]}
    lr = plan_json(capsys, "table2", "--profile", "smoke", "--cfg-options", "optim_wrapper.optimizer.lr=0.02")
    assert all(r["overrides"]["optim_wrapper.optimizer.lr"] == 0.02 for r in lr["runs"])
    assert not {r["config_hash"] for r in base["runs"]} & {r["config_hash"] for r in lr["runs"]}
    assert plan_json(capsys, "table2", "--profile", "smoke") == base, "the cache did not keep an override"


@pytest.mark.parametrize("args, needle", [
    (["--set", "gamma=2"], "--set gamma: not a MuSu switch"),
    (["--set", "b=1.5"], "--set b=1.5: must lie in (0.0, 1.0)"),
    (["--set", "b"], "--set 'b' is not KEY=VALUE"),
    (["--cfg-options", "lr"], "--cfg-options 'lr' is not KEY=VALUE"),
    (["--profile", "no/such.yaml"], "no profile file no/such.yaml")])
def test_bad_overrides_are_one_line(capsys, args, needle):
    assert main(["plan", "table2", "--profile", "smoke", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


def test_a_missing_spec_file_is_one_line(capsys):
    assert main(["plan", "nope/my.yaml", "--profile", "smoke"]) == 2
    assert "no spec file nope/my.yaml" in capsys.readouterr().err


def test_synthetic_generate_settings_are_part_of_the_hash_and_never_regenerated_under_jobs(tmp_path, capsys):
    """Issue 11, item 3: the synthetic set's generate: settings change the data, so the runs."""
    from reproduce.sweep.spec import SWEEPS_DIR
    base = (SWEEPS_DIR / "profiles" / "smoke.yaml").read_text()
    other = tmp_path / "smoke.yaml"
    assert "seed: 0" in base
    other.write_text(base.replace("seed: 0", "seed: 1"))
    hashes = [{r["config_hash"] for r in plan_json(capsys, "soft_hard", "--profile", p)["runs"]}
              for p in ("smoke", str(other))]
    assert hashes[0].isdisjoint(hashes[1])
    from reproduce.sweep import datasets
    from reproduce.sweep.profiles import load_profile
    datasets.prepare(load_profile("smoke"), tmp_path / "w")
    with pytest.raises(Exception, match="holds a synthetic set made with other generate: settings"):
        datasets.prepare(load_profile(str(other)), tmp_path / "w")


def test_the_signal_profile_trains_its_rows_with_five_seeds_each(tmp_path, capsys):
    """Issue 13, item 2 and issue 25, item 3: a profile's ``rows:`` and ``seeds:``. The signal profile
    trains the rows of its orderings (MuSu's default row is both table1/alpha-1/3 and soft_hard/soft),
    each seed a run of its own; a table it has no rows of is refused when named, left
    out of ``all``; a user's own spec trains whole at its scale."""
    out = plan_json(capsys, "all", "--profile", "signal")
    assert sorted(out["tables"]) == ["soft_hard", "table1"] and out["total_runs"] == 35
    by_rows = {}
    for run in out["runs"]:
        by_rows.setdefault(tuple(sorted(run["rows"])), []).append(run)
    assert sorted(by_rows) == [("soft_hard/hard",), ("soft_hard/soft", "table1/alpha-1/3"), ("table1/alpha-0",),
                               ("table1/alpha-1.0",), ("table1/fcos",), ("table1/v-p",), ("table1/v-q",)]
    assert all(sorted(r["seed"] for r in runs) == [0, 1, 2, 3, 4] for runs in by_rows.values())
    assert all(r["max_iters"] == 900 for r in out["runs"])
    # the batch its documents state: 4 images (the config's own; a CPU profile sets no images_per_gpu)
    from reproduce.sweep.plan import Planner, plan_tables
    profile, _, runs = plan_tables("signal", "all")
    planner = Planner(profile)
    assert {planner.resolve(r.config_name, r.options).train_dataloader.batch_size for r in runs} == {4}
    assert main(["plan", "table2", "--profile", "signal"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "profile 'signal' trains no row of table2" in err and "table1, soft_hard" in err
    spec = tmp_path / "mygrid.yaml"
    spec.write_text(OWN_SPEC)
    own = plan_json(capsys, str(spec), "--profile", "signal")
    assert own["tables"] == ["mygrid"] and own["total_runs"] == 20  # 4 rows x 5 seeds
    from reproduce.sweep.spec import SWEEPS_DIR
    bad = tmp_path / "bad.yaml"
    bad.write_text((SWEEPS_DIR / "profiles" / "signal.yaml").read_text()
                   .replace("name: signal", "name: bad").replace("[fcos, v-p,", "[fcos, v-z,"))
    assert main(["plan", "table1", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "table1 has no row 'v-z'" in err and "rows.table1" in err


def test_the_readings_spec_trains_each_reading_beside_the_default_runs(capsys):
    """Issue 13, item 3: docs/readings.yaml's default rows are Table 1's runs, each reading a run of its own."""
    from reproduce.sweep.spec import SWEEPS_DIR
    out = plan_json(capsys, f"{SWEEPS_DIR.parent / 'docs' / 'readings.yaml'},table1", "--profile", "signal")
    rows = {tuple(sorted(r["rows"])) for r in out["runs"]}
    assert ("readings/default", "table1/alpha-1/3") in rows and ("readings/v-q", "table1/v-q") in rows
    assert {("readings/bag-containing",), ("readings/normalizer-batch",), ("readings/v-q-2to1",)} <= rows
    assert out["total_runs"] == 45  # table1's 6 rows and 3 new readings, 5 seeds each


def test_a_warm_plan_parses_nothing_and_sees_every_changed_input(tmp_path, monkeypatch):
    """The plan cache is read before any YAML or config is parsed, keyed on the bytes of what a plan
    is made of: a changed spec, a new spec in the folder, a changed profile each plan again."""
    from conftest import make_sweeps

    from reproduce.sweep import plan as planning
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sweeps = make_sweeps(tmp_path)
    _, _, (run,) = planning.plan_tables("ci", "one", sweeps)

    def parsed(*args, **kwargs):
        raise AssertionError("a warm plan parsed the profile")
    with monkeypatch.context() as m:
        m.setattr(planning, "load_profile", parsed)
        assert planning.plan_tables("ci", "one", sweeps)[2] == [run]
    spec = sweeps / "one.yaml"
    spec.write_text(spec.read_text().replace("{name: musu, label: MuSu}", "{name: musu, label: MuSu, seeds: 2}"))
    assert len(planning.plan_tables("ci", "one", sweeps)[2]) == 2
    (sweeps / "two.yaml").write_text(spec.read_text().replace("table: one", "table: two"))
    assert {t.name for t in planning.plan_tables("ci", "all", sweeps)[1]} >= {"one", "two"}
    profile = sweeps / "profiles" / "ci.yaml"
    profile.write_text(profile.read_text() + "\n# an edit\n")
    with monkeypatch.context() as m:
        m.setattr(planning, "load_profile", parsed)
        with pytest.raises(AssertionError, match="parsed the profile"):
            planning.plan_tables("ci", "one", sweeps)


def test_a_run_names_the_pretrained_weights_its_config_loads(capsys):
    """`run` prefetches ``Run.weights`` (no second resolve of every config): the paper's R-50 rows name
    ImageNet ResNet-50 (caffe style, as in mmdet's FCOS configs), the smoke profile's tiny model none."""
    paper = plan_json(capsys, "table1", "--profile", "paper")
    assert all(len(r["weights"]) == 1 and r["weights"][0].endswith("/resnet50_caffe") for r in paper["runs"]), \
        {r["config"]: r["weights"] for r in paper["runs"]}
    assert all(r["weights"] == [] for r in plan_json(capsys, "table1", "--profile", "smoke")["runs"])
