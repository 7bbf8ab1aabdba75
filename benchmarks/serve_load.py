"""Latency and throughput of ``s2s-tasks serve`` under concurrent load.

Starts the server of ``--ckpt_path`` in this process (uvicorn in a background thread on a free
port of 127.0.0.1, as ``s2s-tasks serve`` runs it), then sends ``--requests`` POSTs of
``--records`` record(s) each from ``--concurrency`` client threads (standard-library HTTP, a new
connection per request) to the task's endpoint, the records taken in turn from the task's
embedded sample predict data (or ``--inputs FILE``, jsonl or txt). Prints p50/p95/p99 latency,
requests and records per second, model calls and records per call (from the server's own
metrics), and writes them with the settings to ``benchmarks/results/serve_load.json``.

    python benchmarks/serve_load.py --ckpt_path last.ckpt [--requests 500 --concurrency 16 --records 1]
        [--max_batch_records 32 --max_wait_ms 5 --threads 1 --out FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import urlparse

from common import write_json

HERE = Path(__file__).resolve().parent


def post(url: str, path: str, body: Dict[str, Any]) -> Tuple[float, int]:
    """(seconds, status) of one POST."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)
    started = time.perf_counter()
    try:
        connection.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    return time.perf_counter() - started, response.status


def metric(url: str, name: str) -> float:
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def load_inputs(task: str, path: str) -> List[Dict[str, Any]]:
    from s2s_tasks.data.records import read_file

    if not path:
        sample = HERE.parent / "tasks" / task / "sample"
        path = str(sample / "predict.txt" if (sample / "predict.txt").is_file() else sample / "predict.jsonl")
    table = read_file(path, "--inputs", "benchmark inputs")
    return [{name: table[name][i] for name in table.column_names} for i in range(len(table))]


def percentile(sorted_values: List[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--records", type=int, default=1, help="records per request")
    parser.add_argument("--inputs", default="", help="records to send (jsonl/txt; default: the task's sample predict data)")
    parser.add_argument("--max_batch_records", type=int, default=32)
    parser.add_argument("--max_wait_ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    args = parser.parse_args(argv)

    import torch

    from s2s_tasks.inference import Predictor
    from s2s_tasks.serving.app import create_app
    from s2s_tasks.serving.model import ServedModel
    from s2s_tasks.serving.options import Batching, Limits
    from s2s_tasks.serving.server import BackgroundServer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = ServedModel(Predictor.from_checkpoint(args.ckpt_path, device=args.device), args.ckpt_path)
    endpoint = model.endpoints[0]
    records = load_inputs(endpoint.task, args.inputs)
    bodies = [{"inputs": [records[(i * args.records + j) % len(records)] for j in range(args.records)]}
              for i in range(args.requests)]
    batching = Batching(max_batch_records=args.max_batch_records, max_wait_ms=args.max_wait_ms)
    limits = Limits(max_records_per_request=max(Limits.max_records_per_request, args.records))
    with BackgroundServer(create_app(model, limits, batching, device=args.device)) as server:
        post(server.url, endpoint.path, bodies[0])  # warm-up, not counted
        calls_before = metric(server.url, "s2s_batch_records_count")
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda body: post(server.url, endpoint.path, body), bodies))
        wall = time.perf_counter() - started
        calls = metric(server.url, "s2s_batch_records_count") - calls_before
    failed = sum(status != 200 for _, status in results)
    latencies = sorted(seconds * 1000 for seconds, _ in results)
    payload = {
        "checkpoint": args.ckpt_path, "task": model.task, "endpoint": endpoint.path, "requests": args.requests,
        "concurrency": args.concurrency, "records_per_request": args.records, "batching": batching.__dict__,
        "torch_threads": torch.get_num_threads(), "device": args.device, "machine": platform.processor() or platform.machine(),
        "failed_requests": failed,
        "latency_ms": {"p50": statistics.median(latencies), "p95": percentile(latencies, 0.95),
                       "p99": percentile(latencies, 0.99), "max": latencies[-1]},
        "requests_per_s": args.requests / wall, "records_per_s": args.requests * args.records / wall,
        "model_calls": calls, "records_per_model_call": args.requests * args.records / calls if calls else None,
    }
    lat = payload["latency_ms"]
    print(f"{model.task} {endpoint.path}: {args.requests} requests x {args.records} record(s), {args.concurrency} concurrent, "
          f"{failed} failed\n  latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms\n"
          f"  {payload['requests_per_s']:.1f} requests/s, {payload['records_per_s']:.1f} records/s, "
          f"{calls:.0f} model calls ({payload['records_per_model_call'] or 0:.1f} records each)")
    write_json(args.out, payload)
    if failed:
        raise SystemExit(f"{failed} of {args.requests} requests failed")


if __name__ == "__main__":
    main(sys.argv[1:])
