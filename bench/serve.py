"""`voxadapt serve` under load: one client at a time vs 8 concurrent clients.

A real server process (the `voxadapt serve` command, tiny Voxtral on CPU, 127.0.0.1 only)
answers `requests` transcription requests of the bundled clips, first from one client that
waits for each answer, then from 8 clients at once; the same requests, the same server.
Reported: requests/s of each and their ratio (what dynamic batching buys), p50/p95 latency,
errors (must be 0), and the server's resident memory before and after the load (no growth
beyond noise). The load is bounded in requests and time and stops by itself.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import tiny_model, workdir

CLIPS = sorted((Path(__file__).parents[1] / "src/voxadapt/samples/clips").glob("*.wav"))
TIMEOUT_S = 600  # the whole load, at most


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, clip: Path) -> tuple[int, float]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nbench\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + clip.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/v1/audio/transcriptions",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError):
        status = 0
    return status, time.perf_counter() - started


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load(url: str, requests: int, clients: int) -> dict[str, Any]:
    clips = [CLIPS[i % len(CLIPS)] for i in range(requests)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda clip: _request(url, clip), clips))
    seconds = time.perf_counter() - started
    latencies = np.array([latency for _, latency in answers])
    return {
        "requests_per_s": requests / seconds,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "errors": sum(status != 200 for status, _ in answers),
        "seconds": seconds,
    }


def run(requests: int = 200, clients: int = 8, max_batch: int = 8) -> dict[str, Any]:
    with workdir() as tmp:
        model = tiny_model(Path(tmp))
        port = _port()
        url = f"http://127.0.0.1:{port}"
        command = [
            *(sys.executable, "-m", "voxadapt.cli", "serve", "--model", str(model)),
            *("--quantization", "none", "--port", str(port), "--served-model-name", "bench"),
            *("--max-batch", str(max_batch), "--max-wait-ms", "20", "--max-new-tokens", "20"),
            *("--max-queue", str(4 * requests)),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if server.poll() is not None:  # refused its options, or failed to start
                    raise RuntimeError(f"the server exited with status {server.returncode}")
                try:
                    if urllib.request.urlopen(f"{url}/health", timeout=5).status == 200:
                        break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.2)
            _load(url, 2 * clients, clients)  # warm-up: first calls pay one-time costs
            rss_before = _rss_mb(server.pid)
            sequential = _load(url, requests, 1)
            concurrent_ = _load(url, requests, clients)
            rss_after = _rss_mb(server.pid)
            again = _load(url, requests, clients)  # the same load again: memory must not grow
            rss_again = _rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        return {
            "inputs": f"{requests} requests of the bundled clips (3.9-5.5 s), tiny Voxtral on "
            f"CPU, greedy, 20 new tokens, --max-batch {max_batch}, 127.0.0.1",
            "sequential": sequential,
            "concurrent": {**concurrent_, "clients": clients},
            "throughput_ratio": concurrent_["requests_per_s"] / sequential["requests_per_s"],
            "errors": sequential["errors"] + concurrent_["errors"] + again["errors"],
            # before the loads, after the sequential + concurrent ones, after the same
            # concurrent load again (growth between the last two would be a leak)
            "server_rss_mb": {"before": rss_before, "after": rss_after, "again": rss_again},
        }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
