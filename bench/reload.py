#!/usr/bin/env python3
"""Reload benchmark: hookside with 1,000 and 10,000 webhook files.

Run with: python3 bench/reload.py   (builds hookside first, as bench/run.sh does: release
mode with the committed profile, into target/pgo; not when HOOKSIDE_BIN names a build)

Measures, for each size: the initial load time, the time of a reload after one file
changed, the time from writing a file to its new version serving (median and worst of
20 writes), and hookside's resident memory. Loopback only; every loop is bounded.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("HOOKSIDE_BIN", os.path.join(ROOT, "target", "pgo", "release", "hookside"))
WRITES = 20

WEBHOOK = """company = "acme-{company}"
method = "POST"
url = "http://{{{{ context.api }}}}/v1/orders/{{{{ extractedData.orderId }}}}/{i}"
timeout = "2s"
[context]
api = "127.0.0.1:9"
[headers]
X-Session = "{{{{ sessionId }}}}"
X-Version = "{version}"
[body]
order = "{{{{ extractedData.orderId }}}}"
answers = "{{{{ extractedData }}}}"
[variables]
status = "response.order.status"
eta = "$.order.delivery.eta"
"""


def write(dir_, i, version=0):
    path = os.path.join(dir_, f"team{i % 50}", f"hook-{i}.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(WEBHOOK.format(company=i % 20, i=i, version=version))
    os.rename(tmp, path)


def get(url, method="GET"):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(count):
    dir_ = tempfile.mkdtemp(prefix=f"hookside-bench-{count}-")
    try:
        for i in range(count):
            write(dir_, i)
        bot, admin = free_port(), free_port()
        started = time.monotonic()
        process = subprocess.Popen(
            [BINARY, "serve", "--dir", dir_, "--listen", f"127.0.0.1:{bot}",
             "--admin-listen", f"127.0.0.1:{admin}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            config = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    config = get(f"http://127.0.0.1:{admin}/-/config")
                    if config["ready"]:
                        break
                except OSError:
                    pass
                time.sleep(0.01)
            ready_after = time.monotonic() - started
            initial_ms = config["last_reload"]["duration_ms"]
            assert config["webhooks"] == count, config["webhooks"]
            time.sleep(1)
            rss_idle = rss_mib(process.pid)

            write(dir_, 7, version=1)
            time.sleep(1.0)  # let the watcher's reload of that write pass
            write(dir_, 8, version=1)
            reload_ms = get(f"http://127.0.0.1:{admin}/-/reload", "POST")["last_reload"]["duration_ms"]

            latencies = []
            for n in range(WRITES):
                name = f"hook-{100 + n}"
                before = get(f"http://127.0.0.1:{bot}/v1/webhooks/{name}")["revision"]
                t0 = time.monotonic()
                write(dir_, 100 + n, version=2)
                while time.monotonic() - t0 < 10:
                    if get(f"http://127.0.0.1:{bot}/v1/webhooks/{name}")["revision"] != before:
                        break
                    time.sleep(0.002)
                latencies.append((time.monotonic() - t0) * 1000)
                time.sleep(0.2)
            rss_after = rss_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=40)
        return {
            "files": count,
            "ready_s": round(ready_after, 3),
            "initial_load_ms": round(initial_ms, 1),
            "reload_one_changed_ms": round(reload_ms, 1),
            "write_to_serving_median_ms": round(statistics.median(latencies), 1),
            "write_to_serving_worst_ms": round(max(latencies), 1),
            "rss_idle_mib": round(rss_idle, 1),
            "rss_after_mib": round(rss_after, 1),
        }
    finally:
        shutil.rmtree(dir_, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(prog="bench/reload.py", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 10000], metavar="FILES",
                        help="how many webhook files, one run each (default: 1000 10000)")
    sizes = parser.parse_args().sizes
    if any(size < 1 for size in sizes):
        parser.error("a run needs at least one webhook file")
    if "HOOKSIDE_BIN" not in os.environ:
        env = dict(os.environ, RUSTFLAGS=f"-Cprofile-use={ROOT}/pgo.profdata")
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "hookside",
                        "--target-dir", os.path.join(ROOT, "target", "pgo")], cwd=ROOT, env=env, check=True)
    results = [run(count) for count in sizes]
    keys = list(results[0].keys())
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for result in results:
        print("| " + " | ".join(str(result[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
