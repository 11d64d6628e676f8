"""Offline compute nodes: `reproduce run` fetches the pretrained weights the
planned configs name, before anything is submitted, into a cache the jobs
read; a job never downloads. Weights are served by a local HTTP server on
127.0.0.1 that the test starts (no outside network)."""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from reproduce.node import weights
from reproduce.errors import UserError
from conftest import raw_runs

REPRODUCE = [sys.executable, "-m", "reproduce.cli"]


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/served on 127.0.0.1 and counts the requests per path."""
    served = tmp_path / "served"
    served.mkdir()
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def do_GET(self):  # noqa: N802 - http.server's name
            hits[self.path] = hits.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def resnet18_weights(path: Path) -> None:
    from mmdet.models.backbones import ResNet
    torch.save(ResNet(depth=18).state_dict(), path)


def test_prefetch_fetches_once_and_refetches_a_corrupt_entry(tmp_path, server):
    base, served, hits = server
    resnet18_weights(served / "r18.pth")
    cache = tmp_path / "cache"
    (path,) = weights.prefetch([f"{base}/r18.pth"], cache)
    assert path == cache / "hub" / "checkpoints" / "r18.pth" and weights.loads(path)
    weights.prefetch([f"{base}/r18.pth"], cache)
    assert hits == {"/r18.pth": 1}, "a cached, loadable file is not fetched again"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    weights.prefetch([f"{base}/r18.pth"], cache)
    assert hits == {"/r18.pth": 2} and weights.loads(path)
    assert not list(path.parent.glob("*.part-*"))


def test_unfetchable_url_and_unwritable_cache_are_one_line_errors(tmp_path, server):
    base, _, _ = server
    with pytest.raises(UserError) as info:
        weights.prefetch([f"{base}/missing.pth"], tmp_path / "cache")
    assert "missing.pth could not be fetched" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError) as info:
        weights.prefetch([f"{base}/r18.pth"], tmp_path / "a-file" / "cache")
    assert "cannot be written" in str(info.value) and "weights_cache" in str(info.value)


def test_open_mmlab_names_map_into_the_cache(tmp_path):
    path = weights.cached_path("open-mmlab://detectron2/resnet50_caffe", tmp_path)
    assert path.parent == tmp_path / "hub" / "checkpoints" and path.suffix == ".pth"


@pytest.mark.slow
def test_jobs_read_the_cache_and_never_download(tmp_path, server, ci_sweeps):
    base, served, hits = server
    resnet18_weights(served / "r18.pth")
    profile = ci_sweeps / "profiles" / "ci.yaml"
    init = f"  model.backbone.init_cfg: {{_delete_: true, type: Pretrained, checkpoint: {base}/r18.pth}}\n"
    profile.write_text(profile.read_text().replace("cfg_options:\n", "cfg_options:\n" + init))
    args = ["--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(tmp_path)]
    out = subprocess.run([*REPRODUCE, "run", "soft_hard", *args, "--poll", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0 and "2/2 finished" in out.stderr, out.stderr[-3000:]
    assert hits == {"/r18.pth": 1}, "fetched once, before submission; the two jobs read the cache"
    assert (tmp_path / ".reproduce" / "weights" / "hub" / "checkpoints" / "r18.pth").is_file()
    from reproduce import tracking
    cl = tracking.client(f"sqlite:///{tmp_path / 'mlruns.db'}")
    for (run,) in raw_runs(cl, "ci").values():
        assert "weights: 1 file(s) cached and loadable" in run.data.tags[tracking.TAG_PREFLIGHT]
    status = json.loads(subprocess.run([*REPRODUCE, "status", "soft_hard", *args, "--json"], cwd=tmp_path,
                                       capture_output=True, text=True, timeout=300).stdout)
    assert {r["state"] for r in status} == {"finished"}
