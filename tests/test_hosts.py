"""Several hosts, really: Redis, two worker hosts and a submitting host, each in a network
namespace of its own on a private bridge (root, as CI runs). Mid-job one worker host loses
its link for good; the job still ends with exactly one result per image, the other host
having taken over the chunk that was cut off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from digitscan.worker.embedded import EmbeddedRedis
from digitscan.worker.settings import Settings
from digitscan.worker.store import ResultStore

from .faultapp import faulty_workers
from .test_faults import N_IMAGES, files, wait_for_log  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SUBNET = "10.87.{}.{}"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Network:
    """A bridge in the root namespace and one namespace per host, each with one veth."""

    def __init__(self, stack: ExitStack):
        self.tag = uuid.uuid4().hex[:4]
        self.net = int(self.tag, 16) % 200 + 20
        self.bridge = f"dsb{self.tag}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        stack.callback(sh, "ip", "link", "del", self.bridge)
        sh("ip", "addr", "add", SUBNET.format(self.net, 254) + "/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        self.stack, self.hosts = stack, {}

    def host(self, name: str, number: int) -> str:
        ns, outside = f"ds{self.tag}{name}", f"dsv{self.tag}{number}"
        sh("ip", "netns", "add", ns)
        self.stack.callback(sh, "ip", "netns", "del", ns)
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", outside, "master", self.bridge, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add",
           SUBNET.format(self.net, number) + "/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        self.hosts[name] = (ns, outside)
        return SUBNET.format(self.net, number)

    def run_in(self, name: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.hosts[name][0])

    def cut(self, name: str) -> None:
        sh("ip", "link", "set", self.hosts[name][1], "down")


def test_two_worker_hosts_one_loses_its_link_mid_job(tmp_path, files, shipped_model):  # noqa: F811
    with ExitStack() as stack:
        net = Network(stack)
        redis_ip = net.host("redis", 1)
        net.host("w1", 2)
        net.host("w2", 3)
        net.host("client", 4)
        server = stack.enter_context(EmbeddedRedis(tmp_path / "redis", host=redis_ip,
                                                   prefix=net.run_in("redis")))
        # A short time limit and visibility timeout: the chunk stranded on the cut host
        # comes back to the queue in seconds, not an hour.
        settings = Settings(broker_url=server.url, model=str(shipped_model), concurrency=1,
                            queue=f"q-{net.tag}", task_time_limit=10, visibility_timeout=15,
                            repair_after=3)
        env = {**settings.to_env(), "DIGITSCAN_TEST_DELAY_S": "0.3"}
        w1 = faulty_workers(env, 1, tmp_path / "w1.log", name="w1", prefix=net.run_in("w1"))
        w2 = faulty_workers(env, 1, tmp_path / "w2.log", name="w2", prefix=net.run_in("w2"))
        for pool in (w1, w2):
            pool.start()
            stack.callback(pool.stop, 5)
        w1.wait_ready()
        w2.wait_ready()
        submitter = subprocess.Popen(
            [*net.run_in("client"), sys.executable, "-m", "digitscan.cli", "submit", str(files),
             "--chunk-size", "8", "--wait", "--out", str(tmp_path / "r.jsonl"), "--timeout", "240"],
            env={**os.environ, **settings.to_env()}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        stack.callback(submitter.kill)
        wait_for_log(w2, ": done, 8 images", times=3)  # w2 is mid-job
        net.cut("w2")
        out, err = submitter.communicate(timeout=300)
        assert submitter.returncode == 0, err[-2000:]
        job = out.strip()
        info = ResultStore.from_url(server.url, settings.result_ttl).info(job)
        assert info["done"] == N_IMAGES and info["errors"] == 0
        with open(tmp_path / "r.jsonl") as f:
            rows = [json.loads(line) for line in f]
        assert [r["source"] for r in rows] == [str(p) for p in sorted(files.iterdir())]
        assert all(r["error"] is None for r in rows)  # one result per image, in order
        w1_chunks = Path(w1.logfile).read_text().count(": done, 8 images")
        w2_chunks = Path(w2.logfile).read_text().count(": done, 8 images")
        assert w2_chunks >= 3 and w1_chunks > w2_chunks  # w1 took over after the cut
