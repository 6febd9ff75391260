"""Load generator for `asyncnet serve`, against a plain onnxruntime session in the same run.

N concurrent clients send the same request, closed loop (each sends its next request when the
previous one answers) or at a fixed total rate (open loop: latency is measured from the
scheduled send time, so queueing delay is counted). The server runs in a subprocess
(`python -m asyncnet serve`); the baseline is an onnxruntime InferenceSession (default options)
called from the same number of threads in this process — what a user would write.

Example (SqueezeNet with random weights):
    asyncnet from-caffe .../SqueezeNet_v1.1/deploy.prototxt -o sq/predict_net.pb --init sq/init_net.pb \\
        --input-shape data=1,3,227,227 --value-info sq/value_info.json
    asyncnet to-onnx sq/predict_net.pb --init sq/init_net.pb --value-info sq/value_info.json -o sq.onnx
    python bench/bench_serving.py sq --onnx sq.onnx --clients 1 4 16 --duration 10
    python bench/bench_serving.py sq --clients 16 --duration 10 --batching
    python bench/bench_serving.py sq --clients 16 --rate-of-peak 0.8 --duration 20
    python bench/bench_serving.py sq --clients 4 --soak 600
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Result:
    target: str
    clients: int
    mode: str
    requests: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_error: str = ""

    def line(self) -> str:
        err = f"  errors {self.errors} ({self.first_error[:80]})" if self.errors else ""
        return (
            f"{self.target:<22} clients {self.clients:>3} {self.mode:<14} {self.throughput:8.1f} req/s  "
            f"p50 {self.p50_ms:8.1f}  p95 {self.p95_ms:8.1f}  p99 {self.p99_ms:8.1f} ms  ({self.requests} req){err}"
        )


def drive(
    make_call: Callable[[], Callable[[], object]],
    clients: int,
    duration: float,
    rate: float | None,
    target: str,
    warmup: float = 1.0,
) -> Result:
    """Each of ``clients`` threads makes its own call (``make_call()``: its own connection) and runs it
    for ``duration`` s after ``warmup``; closed loop, or ``rate`` req/s in total."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.monotonic() + warmup
    stop = start + duration
    ticket = [0]

    def worker() -> None:
        call = make_call()
        while True:
            if rate is None:
                t0 = time.monotonic()
                if t0 >= stop:
                    return
            else:
                with lock:
                    k = ticket[0]
                    ticket[0] += 1
                t0 = start - warmup + k / rate
                if t0 >= stop:
                    return
                delay = t0 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                call()
                ok = True
            except Exception as e:  # noqa: BLE001 - counted and reported
                ok = False
                err = f"{type(e).__name__}: {e}"
            t1 = time.monotonic()
            if t0 >= start:
                with lock:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors.append(err)

    threads = [threading.Thread(target=worker, name=f"bench-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arr = np.array(lat) * 1000 if lat else np.array([float("nan")])
    mode = "closed loop" if rate is None else f"{rate:.1f} req/s"
    return Result(
        target,
        clients,
        mode,
        len(lat),
        len(errors),
        duration,
        len(lat) / duration,
        float(np.percentile(arr, 50)),
        float(np.percentile(arr, 95)),
        float(np.percentile(arr, 99)),
        errors[0] if errors else "",
    )


class Server:
    """`python -m asyncnet serve` in a subprocess on a free port."""

    def __init__(self, model_dir: str, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "asyncnet", "serve", model_dir, "--port", "0", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("serving"):
            self.proc.kill()
            raise SystemExit(f"server did not start: {line} {self.proc.communicate()}")
        self.address = line.split(" on ")[1].split()[0]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return out.strip().splitlines()[-1] if out.strip() else err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--onnx", help="the same model as .onnx for the onnxruntime baseline")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    ap.add_argument("--rate", type=float, help="fixed total request rate (default: closed loop)")
    ap.add_argument("--rate-of-peak", type=float, help="also run at this fraction of the peak closed-loop throughput")
    ap.add_argument("--batching", action="store_true", help="serve with dynamic batching")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, help="server --concurrency")
    ap.add_argument("--blas-threads", type=int, help="server --blas-threads")
    ap.add_argument("--workers", type=int, help="server --workers (processes)")
    ap.add_argument("--soak", type=float, help="instead: one closed-loop run of this many seconds")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    from asyncnet.proto import serving_pb2 as spb
    from asyncnet.serving import ModelFiles
    from asyncnet.serving.client import Client
    from asyncnet.serving.wire import encode

    files = ModelFiles.read(args.model_dir)
    if not files.value_info:
        raise SystemExit("the model folder needs value_info.json (input shapes)")
    rng = np.random.default_rng(0)
    inputs = {n: rng.random(s.shape).astype(s.dtype) for n, s in files.value_info.items()}  # type: ignore[arg-type]
    payload = spb.PredictRequest(inputs=encode(inputs)).SerializeToString()

    extra: list[str] = []
    if args.batching:
        extra += ["--batching", "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms)]
    if args.concurrency:
        extra += ["--concurrency", str(args.concurrency)]
    if args.workers:
        extra += ["--workers", str(args.workers)]
    if args.blas_threads is not None:
        extra += ["--blas-threads", str(args.blas_threads)]
    results: list[Result] = []
    server = Server(args.model_dir, extra)
    label = "asyncnet serve" + (" +batch" if args.batching else "")
    print(f"server {server.address} {' '.join(extra)}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    clients: list[Client] = []
    lock = threading.Lock()

    def make_call() -> Callable[[], object]:
        # One connection per simulated client, as separate users would have.
        c = Client(server.address, timeout=60)
        c.wait_ready()
        with lock:
            clients.append(c)
        return lambda: c.predict_bytes(payload)

    try:
        if args.soak:
            r = drive(make_call, args.clients[0], args.soak, args.rate, label + " soak")
            print(r.line(), flush=True)
            results.append(r)
        else:
            for n in args.clients:
                r = drive(make_call, n, args.duration, args.rate, label)
                print(r.line(), flush=True)
                results.append(r)
            if args.rate_of_peak:
                peak = max(r.throughput for r in results)
                n = max(args.clients)
                r = drive(make_call, n, args.duration, peak * args.rate_of_peak, label + f" @{args.rate_of_peak:.0%}")
                print(r.line(), flush=True)
                results.append(r)
    finally:
        for c in clients:
            c.close()
        print(f"server: {server.stop()}")

    if args.onnx and not args.soak:
        import onnxruntime as ort

        sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
        for n in args.clients:
            r = drive(lambda: lambda: sess.run(None, feed), n, args.duration, args.rate, "onnxruntime threads")
            print(r.line(), flush=True)
            results.append(r)

    served = [r for r in results if r.target == label]
    if served:
        one = served[0].throughput
        for r in served[1:]:
            print(f"  {label}: {r.clients} clients = {r.throughput / one:.2f}x one client's throughput")
    base = {r.clients: r for r in results if r.target == "onnxruntime threads"}
    for r in served:
        if r.clients in base and base[r.clients].throughput:
            print(
                f"  {r.clients} clients: asyncnet serve / onnxruntime = {r.throughput / base[r.clients].throughput:.3f}"
            )
    for r in results:
        if "@" in r.target:
            print(f"  {r.target}: p99 / p50 = {r.p99_ms / r.p50_ms:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
