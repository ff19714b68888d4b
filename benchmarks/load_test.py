"""Bounded load test of the web kiosk on loopback.

1. Starts `edgefuse serve` as a subprocess (so its RSS is measured on its own) and waits for /readyz.
2. Capacity: closed loop, `--clients` concurrent askers for `--capacity-s` seconds, with
   micro-batching off (max_batch 1) and on (max_batch from the config): throughput side by side.
3. Overload: open loop at `--overload`x the measured capacity (batching on) for `--duration` s.
   Checks: no crash (process alive, /readyz 200 after), overload answered 503 (never a
   timeout or 5xx other than 503), every admitted request answered within the deadline,
   memory flat (RSS after vs before the overload phase, after a warm-up phase).
4. Writes the figures to benchmarks/results/load_test.md (and .json) from this run.

    python benchmarks/load_test.py --artifact artifacts/museum-dual-fp32 [--duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


class Kiosk:
    """`edgefuse serve` in a subprocess."""

    def __init__(self, artifact: str, threads: int, max_batch: int, queue_size: int, deadline_ms: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "edgefuse", "serve", "--artifact", artifact, "--port", str(self.port), "--threads", str(threads),
               "--max-batch", str(max_batch), "--queue-size", str(queue_size), "--deadline-ms", str(deadline_ms)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiosk exited: {self.proc.stderr.read()[-2000:]}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("kiosk did not get ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_requests(n: int) -> list[tuple[bytes, str]]:
    """Museum test photos + their questions, PNG-encoded like a phone upload."""
    from PIL import Image

    from edgefuse.data.museum import generate

    out = []
    for item in generate("test", n=n):
        buf = io.BytesIO()
        Image.fromarray(item.image).save(buf, format="PNG")
        for qa in item.questions[:2]:
            out.append((buf.getvalue(), qa.question))
    return out


def encode_request(host: str, image: bytes, question: str) -> bytes:
    """A complete HTTP/1.1 multipart POST /api/ask, built once: the load generator stays cheap."""
    boundary = "edgefuse-load-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\n{question}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /api/ask HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


async def one(host: str, port: int, raw: bytes, timeout: float) -> tuple[int, float, str]:
    """Send one prepared request on a fresh loopback connection; (status, seconds, error code or server ms).

    For a 200 the third field is the server's own time from admission to answer (the JSON `ms`).
    """
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(raw)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(-1), timeout - (time.perf_counter() - t0))
        finally:
            writer.close()
        status = int(data.split(b" ", 2)[1])
        body = data.split(b"\r\n\r\n", 1)[-1]
        try:
            parsed = json.loads(body)
            code = str(parsed.get("ms", "")) if status == 200 else parsed.get("code", "")
        except ValueError:
            code = body[:40].decode("latin-1")
        return status, time.perf_counter() - t0, code
    except Exception as e:  # noqa: BLE001 - counted as a client-side failure
        return -1, time.perf_counter() - t0, type(e).__name__


async def closed_loop(port: int, reqs: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    results: list[tuple[int, float, str]] = []
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        k = i
        while time.perf_counter() < stop:
            results.append(await one("127.0.0.1", port, reqs[k % len(reqs)], 30))
            k += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    ok = [lat for s, lat, _ in results if s == 200]
    return {"requests": len(results), "ok": len(ok), "throughput_rps": len(ok) / elapsed,
            "p50_ms": pct(ok, 50) * 1000, "p95_ms": pct(ok, 95) * 1000, "other": len(results) - len(ok)}


async def open_loop(port: int, reqs: list[bytes], rate: float, seconds: float, deadline_s: float) -> dict[str, Any]:
    n = int(rate * seconds)
    results: list[tuple[int, float, str]] = []
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one("127.0.0.1", port, reqs[i % len(reqs)], deadline_s + 10)))
    for t in asyncio.as_completed(tasks):
        results.append(await t)
    elapsed = time.perf_counter() - t0
    ok = [lat for s, lat, _ in results if s == 200]
    server_ms = [float(code) for s, _, code in results if s == 200 and code]
    codes: dict[str, int] = {}
    for s, _, code in results:
        key = str(s) if s == 200 else f"{s} {code}".strip()
        codes[key] = codes.get(key, 0) + 1
    return {"offered": n, "offered_rps": rate, "planned_s": seconds, "seconds": elapsed, "ok": len(ok), "ok_rps": len(ok) / elapsed,
            "status": codes, "p50_ms": pct(ok, 50) * 1000, "p95_ms": pct(ok, 95) * 1000, "p99_ms": pct(ok, 99) * 1000,
            "max_ms": max(ok) * 1000 if ok else float("nan"),
            "server_p99_ms": pct(server_ms, 99), "server_max_ms": max(server_ms) if server_ms else float("nan"),
            # admitted = accepted by the server's admission control; its own clock starts there
            "over_deadline": sum(1 for ms in server_ms if ms > deadline_s * 1000),
            "client_over_deadline": sum(1 for lat in ok if lat > deadline_s)}


def main(argv: list[str] | None = None) -> int:
    import httpx

    from edgefuse.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--threads", type=int, default=1, help="ORT threads in the server (the other core drives the load)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--capacity-s", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--overload", type=float, default=2.0)
    ap.add_argument("--max-requests", type=int, default=0, help="cap the overload phase's request count (0 = none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load_test.md"))
    args = ap.parse_args(argv)
    rc = load_config(None).runtime
    deadline_s = rc.deadline_ms / 1000.0
    reqs = [encode_request("127.0.0.1", img, q) for img, q in make_requests(32)]
    manifest = json.loads((Path(args.artifact) / "manifest.json").read_text())
    report: dict[str, Any] = {"artifact": args.artifact, "model": f"{manifest.get('model')} {manifest.get('precision')} "
                              f"(weights: {manifest.get('weights_source', 'shipped')})", "threads": args.threads, "queue_size": rc.queue_size,
                              "deadline_ms": rc.deadline_ms, "max_batch": rc.max_batch, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                              "python": platform.python_version()}
    capacity: dict[str, Any] = {}
    for batch in (1, rc.max_batch):
        k = Kiosk(args.artifact, args.threads, batch, rc.queue_size, rc.deadline_ms)
        try:
            k.wait_ready()
            asyncio.run(closed_loop(k.port, reqs, args.clients, 2.0))  # warm-up
            capacity[f"max_batch={batch}"] = asyncio.run(closed_loop(k.port, reqs, args.clients, args.capacity_s))
            print(f"capacity max_batch={batch}: {capacity[f'max_batch={batch}']}", flush=True)
        finally:
            k.stop()
    report["capacity"] = capacity
    best = capacity[f"max_batch={rc.max_batch}"]["throughput_rps"]
    rate = args.overload * best
    if args.max_requests:
        rate = min(rate, args.max_requests / args.duration)
    k = Kiosk(args.artifact, args.threads, rc.max_batch, rc.queue_size, rc.deadline_ms)
    try:
        k.wait_ready()
        asyncio.run(closed_loop(k.port, reqs, args.clients, 5.0))  # warm the allocator before the baseline
        rss_before = rss_mb(k.proc.pid)
        overload = asyncio.run(open_loop(k.port, reqs, rate, args.duration, deadline_s))
        time.sleep(1.0)
        rss_after = rss_mb(k.proc.pid)
        alive = k.proc.poll() is None
        ready = httpx.get(k.url + "/readyz", timeout=5).status_code == 200 if alive else False
        stats = httpx.get(k.url + "/api/stats", timeout=5).json() if alive else {}
    finally:
        k.stop()
    bad = {s: n for s, n in overload["status"].items() if not (s.startswith("200") or s.startswith("503"))}
    verdict = {
        "no_crash": alive and ready,
        "overload_answered_503": any(s.startswith("503") for s in overload["status"]) and not bad,
        "admitted_within_deadline": overload["over_deadline"] == 0,
        "memory_flat": (rss_after - rss_before) < max(20.0, 0.10 * rss_before),
    }
    report.update({"overload": overload, "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
                   "server_stats": stats, "verdict": verdict})
    print(json.dumps(report, indent=2, default=float))
    write_markdown(report, Path(args.out))
    return 0 if all(verdict.values()) else 1


def write_markdown(r: dict[str, Any], path: Path) -> None:
    from edgefuse.artifacts import atomic_write_json, atomic_write_text

    o = r["overload"]
    lines = [
        "# Kiosk load test (loopback)",
        "",
        f"Produced by `python benchmarks/load_test.py --artifact {r['artifact']}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"model {r['model']}; {r['machine']}, Python {r['python']}, server ORT threads {r['threads']}, queue {r['queue_size']}, "
        f"deadline {r['deadline_ms']} ms. Client and server share the machine.",
        "",
        "## Capacity (closed loop)",
        "",
        "| setting | requests | throughput (req/s) | p50 (ms) | p95 (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, c in r["capacity"].items():
        lines.append(f"| {name} | {c['requests']} | {c['throughput_rps']:.1f} | {c['p50_ms']:.1f} | {c['p95_ms']:.1f} |")
    lines += [
        "",
        f"## Overload: {o['offered_rps']:.1f} req/s offered for {o['seconds']:.0f} s ({o['offered']} requests)",
        "",
        f"- answered 200: {o['ok']} ({o['ok_rps']:.1f} req/s); client-side p50 {o['p50_ms']:.1f} ms, p95 {o['p95_ms']:.1f} ms, "
        f"p99 {o['p99_ms']:.1f} ms, max {o['max_ms']:.1f} ms (over the deadline: {o['client_over_deadline']})",
        f"- server-side time from admission to answer: p99 {o['server_p99_ms']:.1f} ms, max {o['server_max_ms']:.1f} ms; "
        f"admitted requests over the deadline: {o['over_deadline']}",
        "- status counts: " + ", ".join(f"`{k}` {v}" for k, v in sorted(o["status"].items())),
        f"- server RSS before / after: {r['rss_before_mb']} / {r['rss_after_mb']} MB",
        f"- server counters: {json.dumps(r['server_stats'])}",
        "",
        "## Verdict",
        "",
    ]
    lines += [f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in r["verdict"].items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_json(path.with_suffix(".json"), r)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
