"""Issue 23, item 4: one holder of a config across work dirs, whatever the latency.

Three work dirs' jobs take one config at once, through a proxy that this test
starts on 127.0.0.1 between them and a real ``mlflow server``, and that holds
the requests that decide (the lease's look-up and its creation) back for up to
two seconds each, in a different order every time. The lease rests on a name
the store lets exist once (``run_lease``), not on waiting: every race has
exactly one holder, and one generation of the lease."""
from __future__ import annotations

import http.client
import http.server
import random
import threading
import time
from pathlib import Path

import pytest

from reproduce import tracking
from reproduce.node.run_lease import Lease
from test_server import _mlflow_server, free_port

pytestmark = pytest.mark.slow

RACES, AT_ONCE, WORK_DIRS = 100, 10, ("/site-a/w", "/site-b/w", "/laptop/w")


class DelayingProxy:
    """An HTTP proxy to ``upstream`` on 127.0.0.1 that holds back each request ``hold(method,
    path)`` seconds before forwarding it; counts what it held."""

    def __init__(self, upstream: int, hold) -> None:
        self.upstream, self.hold, self.held = upstream, hold, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                delay = proxy.hold(self.command, self.path)
                if delay:
                    proxy.held += 1
                    time.sleep(delay)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "DelayingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_hundred_races_of_three_work_dirs_each_have_one_holder(tmp_path: Path):
    rng, lock = random.Random(23), threading.Lock()

    def hold(method: str, path: str) -> float:
        if "registered-models/create" in path or "registered-models/search" in path:
            with lock:
                return rng.choice((0.0, 0.0, 0.3, 1.0, 2.0))
        return 0.0

    port = free_port()
    server = _mlflow_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port, tmp_path / "server.log")
    try:
        with DelayingProxy(port, hold) as proxy:
            uri = f"http://127.0.0.1:{proxy.port}"
            tracking.Tracker(uri).experiment("p")  # the experiment exists before the races (as after any run)
            results: dict[str, dict[str, str | None]] = {}
            start = time.time()
            for first in range(0, RACES, AT_ONCE):
                threads = []
                for race in range(first, first + AT_ONCE):
                    h = f"{race:012x}"
                    results[h] = {}
                    barrier = threading.Barrier(len(WORK_DIRS))

                    def job(h=h, wd="", barrier=barrier) -> None:
                        tracker = tracking.Tracker(uri)
                        lease = Lease(tracker, "p", h, wd, who=f"job of {wd}")
                        barrier.wait()
                        who = lease.acquire()
                        if who is None:
                            lease.hold(tracker.open_run("p", h, {}, "r"))
                        results[h][wd] = who
                    threads += [threading.Thread(target=job, kwargs=dict(wd=wd)) for wd in WORK_DIRS]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=300)
            took = time.time() - start
            assert proxy.held >= RACES, f"the proxy held back only {proxy.held} requests"
            reader = tracking.Tracker(f"http://127.0.0.1:{port}")
            for h, out in results.items():
                assert len(out) == len(WORK_DIRS), (h, out)
                holders = [wd for wd, who in out.items() if who is None]
                assert len(holders) == 1, f"race {h}: {out}"
                assert all(who == f"job of {holders[0]}" for who in out.values() if who is not None), out
                assert len(reader.names(f"musu-lease.p.{h}.")) == 1, f"race {h}: more than one generation"
                (run,) = reader.runs_of("p", h)
                assert run.status == "RUNNING", "one run, the holder's; the others made none"
            print(f"{RACES} races of {len(WORK_DIRS)} in {took:.0f} s, {proxy.held} requests held back")
    finally:
        import os
        import signal
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
