"""Issue 11, item 3 (the annotations left out of a run's identity): a run records the
fingerprint of the annotation files it read; a finished run whose files changed since is stale."""
from __future__ import annotations

import json
import os
import shutil

from reproduce.node.fingerprint import annotation_files, data_fingerprint
from reproduce.node.fingerprint import stale_because
from reproduce.sweep.status import State, classify
from reproduce.tracking import Tracked

OPTIONS = {"train_dataloader.dataset.ann_file": "annotations/train.json",
           "val_dataloader.dataset.ann_file": "annotations/val.json",
           "test_dataloader.dataset.ann_file": "annotations/val.json", "train_cfg.max_iters": 8}


def _root(tmp_path, name="data"):
    root = tmp_path / name
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(
            {"images": [{"id": 1}], "annotations": [{"id": 1, "bbox": [0, 0, 10, 10]}], "categories": []}))
    return root


def test_the_fingerprint_follows_the_content_not_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert annotation_files(OPTIONS) == ["annotations/train.json", "annotations/val.json"]
    # a test split's image list (Table 6's test-dev) is not part of it: a Table 6 run and a Table 1
    # run of one profile compare against the same fingerprint of today's annotations
    test_dev = {**OPTIONS, "test_dataloader.dataset.ann_file": "annotations/image_info_test-dev2017.json"}
    assert annotation_files(test_dev) == annotation_files(OPTIONS)
    root = _root(tmp_path)
    first = data_fingerprint(root, OPTIONS)
    assert first and len(first) == 12
    copy = tmp_path / "elsewhere"
    shutil.copytree(root, copy)
    assert data_fingerprint(copy, OPTIONS) == first  # another work dir, the same annotations
    ann = root / "annotations" / "train.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["bbox"] = [0, 0, 12, 10]  # one box corrected
    ann.write_text(json.dumps(data))
    os.utime(ann, ns=(ann.stat().st_atime_ns, ann.stat().st_mtime_ns + 1_000_000))
    assert data_fingerprint(root, OPTIONS) not in (None, first)
    assert list((tmp_path / "cache" / "musu-reproduce" / "data").glob("*.json"))  # digests are cached
    (copy / "annotations" / "val.json").unlink()
    assert data_fingerprint(copy, OPTIONS) is None and data_fingerprint(root, {}) is None


def test_a_finished_run_on_other_annotations_is_stale_one_that_recorded_none_is_not():
    done = dict(finished={"AP": 30.0}, latest=None, finished_code="c0de", finished_libs="torch==2.13.0")
    same = Tracked(**done, finished_data="aaaaaaaaaaaa")
    other = Tracked(**done, finished_data="bbbbbbbbbbbb")
    unrecorded = Tracked(**done)
    assert stale_because(same, "c0de", "aaaaaaaaaaaa") == ""
    assert stale_because(unrecorded, "c0de", "aaaaaaaaaaaa") == ""
    st = classify(other, None, code="c0de", data="aaaaaaaaaaaa")
    assert st.state == State.FINISHED and st.stale
    assert "annotations bbbbbbbbbbbb, now aaaaaaaaaaaa" in st.detail and "--rerun-stale" in st.detail
    both = stale_because(Tracked(**{**done, "finished_code": "old"}, finished_data="bbbbbbbbbbbb"), "c0de", "aaaaaaaaaaaa")
    assert "code old" in both and "annotations bbbbbbbbbbbb" in both


def test_library_versions_are_shown_not_stale_unless_asked():
    """Issue 24, item 2: the fingerprint hashed the versions of the process that asked (a login
    node's), so where the compute nodes' environment differs every run read stale forever."""
    from reproduce.node.fingerprint import code_fingerprint, legacy_code_fingerprint, library_versions
    here = library_versions()
    there = here.replace("torch==", "torch==0.0.1+")  # the job's torch was another
    done = Tracked(finished={"AP": 30.0}, latest=None, finished_code=code_fingerprint(), finished_libs=there)
    st = classify(done, None, code=code_fingerprint(), libraries=here)
    assert st.state == State.FINISHED and not st.stale, st
    assert "its job ran torch 0.0.1+" in st.detail and "--stale-libraries" in st.detail, st.detail
    st = classify(done, None, code=code_fingerprint(), libraries=here, stale_libraries=True)
    assert st.stale and "trained with torch 0.0.1+" in st.detail, st.detail
    assert stale_because(done, code_fingerprint(), None, there) == ""  # a job in that environment: not stale
    # a run recorded before the libraries were kept apart: its one fingerprint, compared as it was made
    legacy = Tracked(finished={"AP": 30.0}, latest=None, finished_code=legacy_code_fingerprint())
    assert stale_because(legacy, code_fingerprint(), None) == ""
    assert "from before they were recorded apart" in stale_because(
        Tracked(finished={"AP": 30.0}, latest=None, finished_code="0123456789ab"), code_fingerprint(), None)
