"""Serve throughput and latency vs the direct model call, measured side by side in one run (no assertions).

Starts the Serve app (crnn.serve) on a local Ray on a free 127.0.0.1 port -- or targets a running one
with --url -- and sweeps a load generator (aiohttp, pre-encoded bodies, closed loop) over
series-per-request x concurrent clients, for both request formats. Prints p50/p99 latency, requests/s,
series/s and the ratio to the direct call: the same series through ``ForecastEngine.forecast`` (the
code the model replica runs) in this process, at batch --batch, with the model replica's thread
count / device, measured again after every level; each ratio is to the mean of the direct series/s
just before and just after its level (column "direct"), as load on a shared machine drifts.

    python benchmarks/bench_serve.py                                   # paper-size CRNN, random weights, CPU
    python benchmarks/bench_serve.py --model runs/x/model --num-cpus 2 --duration 5
    python benchmarks/bench_serve.py --num-gpus 1 --replicas 2 --sweep 1x1,64x4,64x16 --formats png
    python benchmarks/bench_serve.py --num-gpus 1 --ingress-replicas 8 --ingress-cpus 1 --sweep 64x16
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 --model runs/x/model   # a running app

Goals (issue #5): on CPU, Serve series/s >= 0.7x the direct call at batch 64; on a GPU replica
>= 5,000 series/s and p50 < 20 ms for one series.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_model(size: str, path: str) -> str:
    """A randomly initialised model directory (speed does not depend on the weights)."""
    from crnn.checkpoint import save_model_dir
    from crnn.config import PRESETS, Config, apply
    from crnn.model import build_model

    cfg = apply(Config(), {k: v for k, v in PRESETS["quick"].items() if k.startswith("model.")}) if size == "quick" \
        else Config()
    torch.manual_seed(0)
    save_model_dir(path, build_model(cfg.model), cfg, epoch=0, metrics={})
    return path


def _png(frame: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def make_bodies(frames: np.ndarray, fmt: str, per_request: int, count: int) -> list[bytes]:
    """``count`` request bodies of ``per_request`` series each, cycling over ``frames``."""
    n = len(frames)
    pngs = [[_png(x) for x in s] for s in frames] if fmt == "png" else None
    bodies = []
    for r in range(count):
        idx = [(r * per_request + j) % n for j in range(per_request)]
        series = [{"png": pngs[i]} for i in idx] if fmt == "png" else [{"frames": frames[i].tolist()} for i in idx]
        bodies.append(json.dumps({"series": series}).encode())
    return bodies


async def load(url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: int = 2) -> dict:
    """Closed loop: ``concurrency`` clients send requests back to back for ``duration`` s."""
    import aiohttp

    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=concurrency + 1)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def one(body: bytes) -> bool:
            async with session.post(f"{url}/forecast", data=body, headers=headers) as r:
                await r.read()
                return r.status == 200

        for i in range(warmup):
            if not await one(bodies[i % len(bodies)]):
                raise RuntimeError("warm-up request failed")
        stop = time.perf_counter() + duration

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                ok = await one(bodies[i % len(bodies)])
                lat.append(time.perf_counter() - t0)
                errors += not ok
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {"requests": len(a), "errors": errors, "wall": wall, "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "rps": len(a) / wall}


def direct(engine, frames: np.ndarray, batch: int, duration: float) -> dict:
    """Series/s and per-call latency of ``engine.forecast`` on batches of ``batch`` series."""
    n = len(frames)
    x = [frames[(np.arange(batch) + i * batch) % n] for i in range(max(1, n // batch))]
    engine.forecast(x[0], [1] * batch)  # warm-up
    if engine.device.startswith("cuda"):
        torch.cuda.synchronize()
    lat, t_end, i = [], time.perf_counter() + duration, 0
    t0 = time.perf_counter()
    while time.perf_counter() < t_end or len(lat) < 3:
        t1 = time.perf_counter()
        engine.forecast(x[i % len(x)], [1] * batch)  # returns numpy: synchronised
        lat.append(time.perf_counter() - t1)
        i += 1
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {"calls": len(a), "series_s": len(a) * batch / wall, "p50": float(np.percentile(a, 50))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: a random-weight model of --size)")
    ap.add_argument("--size", choices=("paper", "quick"), default="paper", help="random model's size")
    ap.add_argument("--url", help="benchmark a running app instead of starting one")
    ap.add_argument("--formats", default="png,frames", help="request formats to sweep")
    ap.add_argument("--sweep", default="1x1,1x16,1x64,64x1,64x4",
                    help="comma-separated SERIESxCLIENTS levels (series per request x concurrent clients)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per level (and per direct measurement)")
    ap.add_argument("--batch", type=int, default=64, help="max_batch_size of the app and the direct call's batch")
    ap.add_argument("--wait", type=float, default=0.002, help="batch_wait_timeout_s")
    ap.add_argument("--replicas", type=int, default=1, help="model replicas")
    ap.add_argument("--num-cpus", type=float, default=None,
                    help="CPUs per model replica (default: the CPUs the ingress replicas leave, / replicas)")
    ap.add_argument("--ingress-replicas", type=int, default=1, help="ingress replicas (request parsing)")
    ap.add_argument("--ingress-cpus", type=float, default=0.5,
                    help="CPUs per ingress replica (Ray's logical CPUs: fractions let a 2-core machine hold "
                         "an ingress and a model replica that uses both cores)")
    ap.add_argument("--num-gpus", type=float, default=0.0, help="GPUs in all (split over the replicas)")
    ap.add_argument("--series", type=int, default=256, help="distinct random series to send")
    a = ap.parse_args()

    from crnn.inference import pick_device
    from crnn.serve import ActorOptions, ForecastEngine, Limits, ServeSettings, build_app

    tmp = tempfile.mkdtemp(prefix="bench-serve-")
    model = a.model or make_model(a.size, os.path.join(tmp, "model"))
    cpus = os.cpu_count() or 1
    per_cpu = a.num_cpus if a.num_cpus is not None else \
        max(0.5, (cpus - a.ingress_cpus * a.ingress_replicas) / a.replicas)
    device = pick_device("auto", a.num_gpus)
    threads = max(1, int(np.ceil(per_cpu)))
    engine = ForecastEngine.load(model, device, threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (a.series, engine.in_frames, engine.height, engine.width, engine.channels),
                          dtype=np.uint8)
    print(f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"model {model} ({engine.cfg.model.kind}, conv {list(engine.cfg.model.conv_filters)}, "
          f"lstm {engine.cfg.model.lstm_units}); {cpus} CPUs; device {device}"
          f"{' ' + torch.cuda.get_device_name() if device == 'cuda' else ''}; torch threads {threads}")
    d_batch = direct(engine, frames, a.batch, a.duration)
    d_one = direct(engine, frames, 1, min(a.duration, 2.0))
    print(f"direct ForecastEngine.forecast: batch {a.batch}: {d_batch['series_s']:.0f} series/s "
          f"({d_batch['p50']:.1f} ms/call); batch 1: p50 {d_one['p50']:.2f} ms")

    started = False
    url = a.url
    if url is None:
        import ray
        from ray import serve

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        from crnn.runtime import free_port

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServeSettings(
            model=model, num_replicas=a.replicas, max_ongoing_requests=max(256, a.batch),
            ray_actor_options=ActorOptions(num_cpus=per_cpu, num_gpus=a.num_gpus / a.replicas),
            torch_threads=threads,
            ingress={"num_replicas": a.ingress_replicas, "ray_actor_options": {"num_cpus": a.ingress_cpus}},
            user_config=Limits(max_batch_size=a.batch, batch_wait_timeout_s=a.wait, max_series_per_request=1024,
                               max_body_bytes=256 * 2**20))
        serve.run(build_app(settings), name="bench", route_prefix="/")
        url, started = f"http://127.0.0.1:{port}", True
        print(f"Serve app at {url}: {a.ingress_replicas} ingress replica(s) with {a.ingress_cpus:g} CPUs each; "
              f"{a.replicas} model replica(s), {per_cpu:g} CPUs and {a.num_gpus / a.replicas:g} GPUs "
              f"each, max_batch_size {a.batch}, batch_wait_timeout_s {a.wait}")
    try:
        levels = [tuple(int(v) for v in lv.split("x")) for lv in a.sweep.split(",")]
        print(f"{'format':7s} {'series/req':>10s} {'clients':>7s} {'requests':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
              f"{'req/s':>8s} {'series/s':>9s} {'vs direct':>9s} {'direct':>7s}")
        # The machine is shared and noisy: the direct call is measured again after every level, and
        # each level's ratio uses the mean of the direct measurements just before and just after it.
        before = d_batch["series_s"]
        for fmt in a.formats.split(","):
            for per_req, conc in levels:
                bodies = make_bodies(frames, fmt, per_req, max(8, min(64, a.series // per_req)))
                r = asyncio.run(load(url, bodies, conc, a.duration))
                after = direct(engine, frames, a.batch, a.duration)["series_s"]
                sps = r["rps"] * per_req
                ref = (before + after) / 2
                print(f"{fmt:7s} {per_req:10d} {conc:7d} {r['requests']:8d} {r['p50']:8.1f} {r['p99']:8.1f} "
                      f"{r['rps']:8.1f} {sps:9.0f} {sps / ref:8.2f}x {ref:7.0f}"
                      f"{'  (' + str(r['errors']) + ' errors)' if r['errors'] else ''}", flush=True)
                before = after
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if started:
            from ray import serve

            serve.shutdown()
            import ray

            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
