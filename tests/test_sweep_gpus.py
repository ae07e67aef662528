"""GPUs in sweeps without a GPU: local workers' pinning (with a faked device count) and Ray's GPUs per task."""

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from testbed.sweep.executors import _Worker, gpu_slots, ray_gpus


def test_local_workers_get_one_visible_gpu_each_round_robin(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the GPUs this process may use: workers get those
    assert gpu_slots(3) == ["3", "5", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_slots(2) == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert gpu_slots(2) == [None, None]  # no GPU: nothing is pinned


def environ(pid: int) -> dict[str, str]:
    """The environment a spawned process started with. Until it has exec'd Python's spawn entry point, /proc shows
    the forked copy of this process's own initial environment, without what was set since: wait for the exec."""
    deadline = time.time() + 30
    while b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes() and time.time() < deadline:
        time.sleep(0.01)
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads a process's environment from /proc")
def test_a_spawned_worker_sees_only_its_gpu_and_this_process_keeps_its_own(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    ctx = mp.get_context("spawn")
    workers = [_Worker(ctx, ctx.Queue(), 1, gpu) for gpu in ("5", None)]
    try:
        assert environ(workers[0].proc.pid)["CUDA_VISIBLE_DEVICES"] == "5"
        assert environ(workers[1].proc.pid)["CUDA_VISIBLE_DEVICES"] == "3,5"  # None: left as it is
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    finally:
        for worker in workers:
            worker.proc.kill()
            worker.proc.join()


def test_ray_tasks_share_the_cluster_s_gpus_out_over_its_cpus_unless_told():
    assert ray_gpus({"CPU": 16.0, "GPU": 1.0}, None) == 0.0625  # 16 one-CPU tasks at once, 16 to the GPU
    assert ray_gpus({"CPU": 12.0, "GPU": 1.0}, None) == 0.0833  # to Ray's 4 decimals, rounded down
    assert ray_gpus({"CPU": 4.0, "GPU": 8.0}, None) == 1.0  # never more than one GPU a task by default
    assert ray_gpus({"CPU": 2.0}, None) == 0.0
    assert ray_gpus({"CPU": 16.0, "GPU": 1.0}, 0.5) == 0.5
