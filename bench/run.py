#!/usr/bin/env python3
"""hookside against nginx and HAProxy, side by side, in one run.

Run with: bash bench/run.sh [ROUNDS] [SECONDS]   (it installs the tools and builds first)

Contenders, all answering the same POST with a small JSON body:
  direct    the load generator straight to the upstream (the physical limit here)
  nginx     proxy_pass adding `Authorization: Bearer ...` and `X-Session` from a request header
  haproxy   the same with http-request set-header
  hookside  a webhook: bearer auth, X-Session from the conversation, a small JSON body,
            two variables mapped (one Jinja expression, one JSONPath)
The upstream is nginx answering a fixed JSON document. Layouts on the 2 cores:
  split  the contender on core 0; the load generator and the upstream on core 1 (for
         `direct`, a second upstream instance on core 0 plays the contender);
  pod    the load generator next to the contender on core 0 (a bot and its sidecar), the
         upstream alone on core 1: saturation only. Here the contender's core is the limit
         whatever the contender; in `split`, an efficient contender leaves core 1 the
         limit (each saturation round reports both cores' busy share).
Rounds interleave the contenders (A B C D A B C D ...) so that drift hits all alike. At a
fixed rate each contender also runs alone, then hookside runs at the same time as each proxy
(one oha each), so that the machine's stalls hit both of a pair alike.
Loopback only; every run is bounded.

Then, for hookside, nginx and HAProxy: CPU instructions per request (valgrind callgrind,
repeatable where wall-clock is not) and, for hookside, allocations per invocation (dhat).
With --tls the upstream speaks TLS, as a company's API does: saturation in both layouts and
instructions per request, for nginx and HAProxy proxying to it over HTTP/1.1 and for hookside
over HTTP/1.1 and over HTTP/2, which it speaks when TLS negotiates it; no `direct`, no fixed
rate. --ab BIN_A BIN_B runs two builds at the same time as the side-by-side rounds do and
reports A minus B (how each change in BENCHMARKS.md was judged).
"""
import argparse
import bisect
import contextlib
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What is measured: the release build with the committed profile (pgo.profdata), which
# bench/run.sh builds into target/pgo as the Dockerfile builds the image's. HOOKSIDE_BIN and
# HOOKSIDE_SYSTEM_ALLOC_BIN measure other builds (say, an earlier commit's, or a plain
# `cargo build --release`).
HOOKSIDE = os.environ.get("HOOKSIDE_BIN", os.path.join(ROOT, "target", "pgo", "release", "hookside"))
# The same build with the system allocator, which valgrind's dhat can count.
HOOKSIDE_SYSTEM_ALLOC = os.environ.get(
    "HOOKSIDE_SYSTEM_ALLOC_BIN", os.path.join(ROOT, "target", "system-alloc", "release", "hookside"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONTENDER_CORE = "0"
CLIENT_CORE = "1"
TOKEN = "bench-token-0123456789abcdef"
CONNECTIONS = int(os.environ.get("CONNS", "32"))
RATE = int(os.environ.get("RATE", "2000"))
CONVERSATION = json.dumps({
    "sessionId": "s-1", "reply": "where is my order?", "moduleId": 4,
    "extractedData": {"orderId": "A-17", "priority": 2},
})
UPSTREAM_ANSWER = ('{"order":{"id":"A-17","status":"shipped","delivery":{"eta":"2026-12-01",'
                   '"carrier":"DHL"},"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}}')


def oha(target, *options):
    """oha posting the bench's conversation to `target`, pinned to the client core."""
    return pinned(CLIENT_CORE, ["oha", *options, "--no-tui", "-m", "POST", "-d", CONVERSATION,
                                "-H", "content-type: application/json", "-H", "x-session: s-1", target])


def hookside_command(binary, work, port, admin):
    """`binary serve` on the bench's webhooks, bot calls on `port`."""
    return [binary, "serve", "--dir", f"{work}/webhooks.d", "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin}"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def pinned(core, command):
    return ["taskset", "-c", core] + command


def certificates(work):
    """For --tls: a private CA (`ca.pem`) and the upstream's certificate for localhost and
    127.0.0.1, signed by it (`upstream.pem`, `upstream.key`), all in `work`."""
    def openssl(*args):
        done = subprocess.run(["openssl", *args], cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"openssl {args[0]} failed: {done.stderr.strip()}")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=hookside bench CA")
    openssl("req", *key, "-keyout", "upstream.key", "-out", "upstream.csr", "-subj", "/CN=localhost")
    write(f"{work}/upstream.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "upstream.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "upstream.pem", "-days", "2", "-extfile", "upstream.ext")


def nginx_upstream_conf(work, name, port, h2_port=None):
    """The upstream: the fixed answer on `port`. With `h2_port` (--tls), both over TLS with the
    bench CA's certificate: HTTP/1.1 only on `port`, HTTP/2 offered on `h2_port`; `/protocol`
    answers with the protocol in `X-Protocol`, for the bench's check."""
    answer = f"location / {{ default_type application/json; return 200 '{UPSTREAM_ANSWER}'; }}"
    servers = f"server {{ listen 127.0.0.1:{port} backlog=4096; {answer} }}"
    if h2_port:
        probe = "location /protocol { add_header X-Protocol $server_protocol always; return 200 '{}'; }"
        servers = (f"ssl_certificate {work}/upstream.pem; ssl_certificate_key {work}/upstream.key;\n"
                   "  ssl_protocols TLSv1.2 TLSv1.3;\n"
                   f"  server {{ listen 127.0.0.1:{port} ssl backlog=4096; {answer} {probe} }}\n"
                   f"  server {{ listen 127.0.0.1:{h2_port} ssl http2 backlog=4096; {answer} {probe} }}")
    return f"""
worker_processes 1; daemon off; master_process off;
pid {work}/{name}.pid; error_log {work}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path {work}/{name}-body; proxy_temp_path {work}/{name}-proxy;
  fastcgi_temp_path {work}/{name}-fcgi; uwsgi_temp_path {work}/{name}-uwsgi; scgi_temp_path {work}/{name}-scgi;
  {servers}
}}
"""


def nginx_proxy_conf(work, port, upstream, tls=False):
    scheme, verify = "http", ""
    if tls:  # verified as hookside verifies; sessions resumed (nginx's default)
        scheme = "https"
        verify = (f"proxy_ssl_verify on; proxy_ssl_trusted_certificate {work}/ca.pem; "
                  "proxy_ssl_name localhost; proxy_ssl_server_name on; "
                  "proxy_ssl_protocols TLSv1.2 TLSv1.3;")  # 1.22 leaves out 1.3 by default
    return f"""
worker_processes 1; daemon off; master_process off;
pid {work}/nginx.pid; error_log {work}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path {work}/nginx-body; proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fcgi; uwsgi_temp_path {work}/nginx-uwsgi; scgi_temp_path {work}/nginx-scgi;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass {scheme}://up; {verify}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {TOKEN}";
      proxy_set_header X-Session $http_x_session;
    }}
  }}
}}
"""


def haproxy_conf(port, upstream, ca=None):
    tls = f" ssl verify required ca-file {ca} verifyhost localhost sni str(localhost)" if ca else ""
    return f"""
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{port}
  http-request set-header Authorization "Bearer {TOKEN}"
  http-request set-header X-Session %[req.hdr(x-session)]
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{upstream} maxconn 1000{tls}
"""


def hookside_webhook(upstream, ca=None):
    """The bench's webhook; with `ca` (--tls), over HTTPS to an upstream of that CA."""
    scheme = "https" if ca else "http"
    tls = f'[tls]\nca_file = "{ca}"\n' if ca else ""
    return f"""company = "bench"
method = "POST"
url = "{scheme}://127.0.0.1:{upstream}/v1/orders/{{{{ extractedData.orderId }}}}"
timeout = "5s"
[auth]
type = "bearer"
token = "${{file:../token}}"
[headers]
X-Session = "{{{{ sessionId }}}}"
[body]
order = "{{{{ extractedData.orderId }}}}"
text = "{{{{ reply }}}}"
[variables]
status = "response.order.status"
eta = "$.order.delivery.eta"
{tls}"""


def protocol_webhook(upstream, ca):
    """For --tls: the protocol the upstream saw, to check that hookside spoke what it offers."""
    return f"""company = "bench"
method = "GET"
url = "https://127.0.0.1:{upstream}/protocol"
[tls]
ca_file = "{ca}"
[variables]
protocol = "headers['x-protocol']"
"""


class Lab:
    """Every server, started once; contenders idle while another is measured.

    With `tls` (--tls) the upstream speaks TLS, HTTP/1.1 on one port and HTTP/2 on another;
    there is no `direct`, and `hookside-h2` is hookside's webhook to the HTTP/2 port (the
    same process as `hookside`)."""

    def __init__(self, work, hookside_wrapper=None, only=None, tls=False):
        self.work = work
        self.tls = tls
        self.processes = []
        self.ports = {name: free_port() for name in ["up", "up_h2", "direct", "nginx", "haproxy", "hookside", "admin"]}
        p = self.ports
        ca = None
        if tls:
            certificates(work)
            ca = f"{work}/ca.pem"
            only = (only if only is not None else {"nginx", "haproxy", "hookside"}) - {"direct"}
        write(f"{work}/up.conf", nginx_upstream_conf(work, "up", p["up"], p["up_h2"] if tls else None))
        write(f"{work}/direct.conf", nginx_upstream_conf(work, "direct", p["direct"]))
        write(f"{work}/nginx.conf", nginx_proxy_conf(work, p["nginx"], p["up"], tls))
        write(f"{work}/haproxy.cfg", haproxy_conf(p["haproxy"], p["up"], ca))
        os.makedirs(f"{work}/webhooks.d", exist_ok=True)
        write(f"{work}/token", TOKEN + "\n")
        write(f"{work}/webhooks.d/bench.toml", hookside_webhook(p["up"], ca))
        if tls:
            write(f"{work}/webhooks.d/bench-h2.toml", hookside_webhook(p["up_h2"], ca))
            write(f"{work}/webhooks.d/protocol-h1.toml", protocol_webhook(p["up"], ca))
            write(f"{work}/webhooks.d/protocol-h2.toml", protocol_webhook(p["up_h2"], ca))
        self.upstream_pid = self.start(CLIENT_CORE, [NGINX, "-c", f"{work}/up.conf", "-p", work], p["up"])
        commands = {
            "direct": [NGINX, "-c", f"{work}/direct.conf", "-p", work],
            "nginx": [NGINX, "-c", f"{work}/nginx.conf", "-p", work],
            "haproxy": [HAPROXY, "-f", f"{work}/haproxy.cfg", "-db"],
            "hookside": (hookside_wrapper or []) + hookside_command(
                HOOKSIDE_SYSTEM_ALLOC if hookside_wrapper and "--tool=dhat" in hookside_wrapper else HOOKSIDE,
                work, p["hookside"], p["admin"]),
        }
        self.pids = {}
        for name, command in commands.items():
            if only is not None and name not in only:
                continue
            self.pids[name] = self.start(CONTENDER_CORE, command, p[name])
        if tls and "hookside" in self.pids:
            self.pids["hookside-h2"] = self.pids["hookside"]

    def start(self, core, command, port):
        env = {**os.environ, "RUST_LOG": "warn"}
        process = subprocess.Popen(pinned(core, command), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=env)
        self.processes.append(process)
        wait_port(port)
        return process.pid

    def target(self, name):
        if name in ("direct", "nginx", "haproxy"):
            return f"http://127.0.0.1:{self.ports[name]}/v1/orders/A-17"
        if name == "hookside-h2":
            return f"http://127.0.0.1:{self.ports['hookside']}/v1/webhooks/bench-h2"
        return f"http://127.0.0.1:{self.ports[name]}/v1/webhooks/bench"  # hookside, or a build of `ab`

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def check(lab):
    """Every contender answers, and hookside maps its variables (with --tls, over the protocol
    each of its webhooks is meant to speak)."""
    def post(url):
        request = urllib.request.Request(url, data=CONVERSATION.encode(), method="POST",
                                         headers={"x-session": "s-1", "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    for name in lab.pids:
        body = post(lab.target(name))
        if name.startswith("hookside"):
            assert body["variables"] == {"status": "shipped", "eta": "2026-12-01"}, body
        else:
            assert body["order"]["status"] == "shipped", body
    if lab.tls:
        base = f"http://127.0.0.1:{lab.ports['hookside']}/v1/webhooks"
        for webhook, protocol in (("protocol-h1", "HTTP/1.1"), ("protocol-h2", "HTTP/2.0")):
            seen = post(f"{base}/{webhook}")["variables"]["protocol"]
            if seen != protocol:
                raise RuntimeError(f"{webhook}: the upstream saw {seen}, not {protocol}")


def wrk_script(work):
    path = f"{work}/post.lua"
    body = CONVERSATION.replace("\\", "\\\\").replace('"', '\\"')
    write(path, f'wrk.method = "POST"\nwrk.body = "{body}"\n'
                'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["X-Session"] = "s-1"\n')
    return path


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def core_ticks():
    """(busy, total) clock ticks of each core so far, from /proc/stat."""
    ticks = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if re.fullmatch(r"cpu\d+", name):
                values = [int(v) for v in values]
                idle = values[3] + values[4]
                ticks[name] = (sum(values) - idle, sum(values))
    return ticks


def saturation(lab, name, seconds, script, rss_of=None, client_core=None):
    command = pinned(client_core or CLIENT_CORE, ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
                                                  "--latency", "-s", script, lab.target(name)])
    cores_before, cpu_before = core_ticks(), cpu_ticks(lab.pids[name])
    upstream_before = cpu_ticks(lab.upstream_pid)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    rss = None
    if rss_of:
        time.sleep(seconds / 2)
        rss = rss_mib(rss_of)
    out, _ = process.communicate(timeout=seconds + 30)
    cores_after, cpu_after = core_ticks(), cpu_ticks(lab.pids[name])
    upstream_after = cpu_ticks(lab.upstream_pid)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise RuntimeError(f"{name}: errors under load:\n{out}")
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        latency[pct] = float(value) * UNITS[unit]
    busy = {core: (cores_after[core][0] - before[0]) / max(1, cores_after[core][1] - before[1])
            for core, before in cores_before.items()}
    requests = rps * seconds
    def per_request_us(before, after):
        return (sum(after) - sum(before)) / os.sysconf("SC_CLK_TCK") / requests * 1e6
    return {"rps": rps, "p50_ms": latency.get("50"), "p99_ms": latency.get("99"), "rss_mib": rss,
            "busy0": busy.get("cpu0"), "busy1": busy.get("cpu1"),
            "cpu_us": per_request_us(cpu_before, cpu_after),
            "upstream_us": per_request_us(upstream_before, upstream_after)}


def fixed_rate(lab, names, seconds):
    """One open-loop round at RATE for each of `names`, all at the same time (one oha each):
    each one's percentiles and every request's latency (ms)."""
    running = {}
    for name in names:
        db = f"{lab.work}/fixed-{name}.db"
        if os.path.exists(db):
            os.remove(db)
        command = oha(lab.target(name), "-z", f"{seconds}s", "-q", str(RATE), "-c", str(CONNECTIONS),
                      "--latency-correction", "--output-format", "json", "--db-url", db)
        running[name] = (db, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    results = {}
    for name, (db, process) in running.items():
        out, _ = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"{name}: oha failed at fixed rate")
        report = json.loads(out)
        percentiles = report["latencyPercentiles"]
        status = report.get("statusCodeDistribution", {})
        if set(status) - {"200"}:
            raise RuntimeError(f"{name}: non-200 answers at fixed rate: {status}")
        # Each request's latency from when it was due (oha's latency correction), as oha's
        # own percentiles count it: pooled over rounds, they give percentiles with more samples.
        with contextlib.closing(sqlite3.connect(db)) as records:
            latencies = [(end - (due if due is not None else start)) * 1e3 for start, due, end in
                         records.execute("select start, start_latency_correction, end from oha")]
        os.remove(db)
        results[name] = {
            "p50_ms": percentiles["p50"] * 1e3,
            "p99_ms": percentiles["p99"] * 1e3,
            "p999_ms": percentiles["p99.9"] * 1e3,
            "rps": report["summary"]["requestsPerSec"],
            "latencies_ms": latencies,
        }
    return results


def cpu_ticks(pid):
    """(user, system) clock ticks a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def cpu_split(seconds):
    """User and system CPU time per request of each proxy under saturation."""
    work = tempfile.mkdtemp(prefix="hookside-cpu-")
    lab = Lab(work)
    tick = os.sysconf("SC_CLK_TCK")
    lines = ["CPU time per request under saturation (/proc/PID/stat around one wrk run):", "",
             "| contender | requests/s | user us | system us |", "| --- | --- | --- | --- |"]
    try:
        script = wrk_script(work)
        for name in ["nginx", "haproxy", "hookside"]:
            saturation(lab, name, 1, script)
            before = cpu_ticks(lab.pids[name])
            result = saturation(lab, name, seconds, script)
            after = cpu_ticks(lab.pids[name])
            requests = result["rps"] * seconds
            user, system = ((a - b) / tick / requests * 1e6 for a, b in zip(after, before))
            lines.append(f"| {name} | {result['rps']:,.0f} | {user:.1f} | {system:.1f} |")
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def signed(values):
    """Median (min..max) of differences, with their signs."""
    return f"{statistics.median(values):+.3f} ({min(values):+.3f}..{max(values):+.3f})"


def percentile(ordered, share):
    """The value below which `share` of the sorted values fall (nearest rank, as oha counts)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def timing(rounds, seconds):
    work = tempfile.mkdtemp(prefix="hookside-bench-")
    lab = Lab(work)
    try:
        check(lab)
        script = wrk_script(work)
        contenders = ["direct", "nginx", "haproxy", "hookside"]
        for name in contenders:  # warm-up: connections, pools, caches
            saturation(lab, name, 1, script)
        idle_rss = rss_mib(lab.pids["hookside"])
        sat = {n: [] for n in contenders}
        pod = {n: [] for n in contenders}
        fixed = {n: [] for n in contenders}
        together = {"nginx": [], "haproxy": []}
        for r in range(rounds):
            for name in contenders:
                sat[name].append(saturation(lab, name, seconds, script,
                                            rss_of=lab.pids["hookside"] if name == "hookside" else None))
            for name in contenders:
                pod[name].append(saturation(lab, name, seconds, script, client_core=CONTENDER_CORE))
            for name in contenders:
                fixed[name].append(fixed_rate(lab, [name], seconds)[name])
            for proxy in ["nginx", "haproxy"]:
                # Both at once, so that a stall of the machine hits both alike; who starts
                # first alternates.
                pair = [proxy, "hookside"] if r % 2 == 0 else ["hookside", proxy]
                together[proxy].append(fixed_rate(lab, pair, seconds))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {sat[n][-1]['rps']:.0f}/s" for n in contenders)
                  + "; pod: " + ", ".join(f"{n} {pod[n][-1]['rps']:.0f}/s" for n in contenders), file=sys.stderr)
        return {"saturation": sat, "pod": pod, "fixed": fixed, "together": together, "idle_rss_mib": idle_rss}
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)


def tls_timing(rounds, seconds):
    """--tls: saturation in both layouts, the upstream over TLS (hookside over HTTP/1.1 and
    HTTP/2, nginx and HAProxy over HTTP/1.1, as they proxy)."""
    work = tempfile.mkdtemp(prefix="hookside-bench-tls-")
    lab = Lab(work, tls=True)
    try:
        check(lab)
        script = wrk_script(work)
        contenders = ["nginx", "haproxy", "hookside", "hookside-h2"]
        for name in contenders:  # warm-up: connections, TLS sessions, pools, caches
            saturation(lab, name, 1, script)
        sat = {n: [] for n in contenders}
        pod = {n: [] for n in contenders}
        for r in range(rounds):
            for name in contenders:
                sat[name].append(saturation(lab, name, seconds, script))
            for name in contenders:
                pod[name].append(saturation(lab, name, seconds, script, client_core=CONTENDER_CORE))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {sat[n][-1]['rps']:.0f}/s" for n in contenders)
                  + "; pod: " + ", ".join(f"{n} {pod[n][-1]['rps']:.0f}/s" for n in contenders), file=sys.stderr)
        return {"saturation": sat, "pod": pod}
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)


def report_tls(result):
    lines = saturation_table(f"Upstream over TLS. Saturation, layout split (wrk, 1 thread, {CONNECTIONS} "
                             "connections, on core 1 with the upstream), median (min-max) over rounds:",
                             result["saturation"])
    return "\n".join(lines + [""] + saturation_table(
        "Upstream over TLS. Saturation, layout pod (wrk on core 0 with the contender, the upstream alone on "
        "core 1), median (min-max) over rounds:", result["pod"]))


def saturation_table(title, sat):
    lines = [title, "",
             "| contender | requests/s | p50 ms | p99 ms | contender CPU us per request "
             "| upstream CPU us per request | core 0 busy | core 1 busy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in sat.items():
        lines.append(f"| {name} | {spread([r['rps'] for r in runs])} | {spread([r['p50_ms'] for r in runs])} "
                     f"| {spread([r['p99_ms'] for r in runs])} | {spread([r['cpu_us'] for r in runs])} "
                     f"| {spread([r['upstream_us'] for r in runs]) if name != 'direct' else '-'} "
                     f"| {spread([r['busy0'] for r in runs])} | {spread([r['busy1'] for r in runs])} |")
    lines += ["", "Throughput ratios per round (same round, side by side):", ""]
    for ours in (name for name in sat if name.startswith("hookside")):
        for other in ["nginx", "haproxy"]:
            ratios = [h["rps"] / o["rps"] for h, o in zip(sat[ours], sat[other])]
            lines.append(f"- {ours}/{other}: {spread(ratios)}")
    return lines


def report_timing(result):
    sat, fixed = result["saturation"], result["fixed"]
    lines = saturation_table(f"Saturation, layout split (wrk, 1 thread, {CONNECTIONS} connections, on core 1 "
                             "with the upstream), median (min-max) over rounds:", sat)
    lines += [""] + saturation_table("Saturation, layout pod (wrk on core 0 with the contender, the upstream "
                                     "alone on core 1), median (min-max) over rounds:", result["pod"])
    lines += ["", f"Fixed rate (oha, {RATE} requests/s, latency-corrected), median (min-max):", "",
              "| contender | p50 ms | p99 ms | p99.9 ms | p99 added over direct ms |", "| --- | --- | --- | --- | --- |"]
    for name, runs in fixed.items():
        added = [r["p99_ms"] - d["p99_ms"] for r, d in zip(runs, fixed["direct"])]
        lines.append(f"| {name} | {spread([r['p50_ms'] for r in runs])} | {spread([r['p99_ms'] for r in runs])} "
                     f"| {spread([r['p999_ms'] for r in runs])} | {spread(added) if name != 'direct' else '-'} |")
    lines += ["", f"Fixed rate, every request of every round together ({len(fixed['direct'])} rounds): a "
              "stall of the machine delays all the requests due during it, whichever contender runs, "
              "and one round holds only a few such stalls, so these percentiles, with rounds times "
              "more samples, are steadier than one round's:", "",
              "| contender | requests | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 added over direct ms |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    pooled = {name: sorted(x for r in runs for x in r["latencies_ms"]) for name, runs in fixed.items()}
    for name, values in pooled.items():
        added = percentile(values, 0.99) - percentile(pooled["direct"], 0.99)
        lines.append(f"| {name} | {len(values):,} | {percentile(values, 0.5):.3f} | {percentile(values, 0.9):.3f} "
                     f"| {percentile(values, 0.99):.3f} | {percentile(values, 0.999):.3f} "
                     f"| {f'{added:.3f}' if name != 'direct' else '-'} |")
    lines.append("")
    for other in ["nginx", "haproxy"]:
        lower = sum(h["p99_ms"] <= o["p99_ms"] for h, o in zip(fixed["hookside"], fixed[other]))
        lines.append(f"- rounds where hookside's p99 was at or below {other}'s: {lower} of {len(fixed[other])}")
    lines += ["", f"Fixed rate, hookside and one proxy measured at the same time (one oha each at {RATE} "
              "requests/s, both on core 1; both contenders on core 0), so that a stall hits both alike: "
              "hookside's percentile minus the proxy's in the same round, median (min-max) over "
              "rounds, and the percentiles of all the rounds' requests together:", "",
              "| hookside against | p50 difference ms | p99 difference ms | p99.9 difference ms "
              "| rounds hookside's p99 at or below | all requests: p50 ms | p99 ms | p99.9 ms |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for other, rounds in result["together"].items():
        lines.append(side_by_side_row(other, rounds, "hookside", other))
    lines += ["", "(all requests: hookside's figure / the proxy's)", ""]
    for other, rounds in result["together"].items():
        lines += [p99_interval(rounds, "hookside", other), ""]
    lines += [f"hookside resident memory: idle {result['idle_rss_mib']:.1f} MiB, under load "
              f"{spread([r['rss_mib'] for r in sat['hookside']])} MiB"]
    return "\n".join(lines)


def side_by_side_row(label, rounds, first, second):
    """A row of a side-by-side table: `first` minus `second` in each round (median, min..max),
    the rounds where `first`'s p99 was at or below, and both over all requests."""
    differences = {key: [r[first][key] - r[second][key] for r in rounds] for key in ["p50_ms", "p99_ms", "p999_ms"]}
    lower = sum(d <= 0 for d in differences["p99_ms"])
    pooled = {name: sorted(x for r in rounds for x in r[name]["latencies_ms"]) for name in [first, second]}
    shown = {key: "/".join(f"{percentile(pooled[name], share):.3f}" for name in [first, second])
             for key, share in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)]}
    return (f"| {label} | {signed(differences['p50_ms'])} | {signed(differences['p99_ms'])} "
            f"| {signed(differences['p999_ms'])} | {lower} of {len(rounds)} "
            f"| {shown['p50']} | {shown['p99']} | {shown['p999']} |")


# Fewer rounds than this give no interval for a side-by-side p99 comparison (the bench's
# 9 rounds give one, on the narrow side; a long --ab run is the one to judge by).
MIN_ROUNDS = 8


def p99_interval(rounds, first, second, resamples=1000):
    """How far the p99 comparison of a side-by-side run can be trusted: the rounds resampled
    with replacement (each round keeps both contenders' requests, as they ran together), and
    the 2.5th and 97.5th percentiles of `first` minus `second` over the resamples, for the
    per-round median of the p99 difference and for the p99 of all requests. With fewer than
    MIN_ROUNDS rounds the resamples mean little, and it says so instead."""
    if len(rounds) < MIN_ROUNDS or any(not r[name]["latencies_ms"] for r in rounds for name in [first, second]):
        return (f"{first} minus {second}: no interval for the p99 difference "
                f"(it takes {MIN_ROUNDS} rounds or more, each with requests)")
    ordered = [{name: sorted(r[name]["latencies_ms"]) for name in [first, second]} for r in rounds]
    differences = [r[first]["p99_ms"] - r[second]["p99_ms"] for r in rounds]

    def pooled_p99(picks, name):
        # The nearest-rank p99 of the picked rounds' requests together, without merging them:
        # the smallest value with more than int(0.99 * n) values at or below it.
        lists = [ordered[i][name] for i in picks]
        rank = int(sum(len(values) for values in lists) * 0.99) + 1
        low, high = 0.0, max(values[-1] for values in lists)
        for _ in range(40):
            middle = (low + high) / 2
            if sum(bisect.bisect_right(values, middle) for values in lists) >= rank:
                high = middle
            else:
                low = middle
        return high

    chance = random.Random(7)
    medians, pooled = [], []
    for _ in range(resamples):
        picks = [chance.randrange(len(rounds)) for _ in rounds]
        medians.append(statistics.median(differences[i] for i in picks))
        pooled.append(pooled_p99(picks, first) - pooled_p99(picks, second))
    interval = lambda values: (f"{percentile(sorted(values), 0.025) * 1000:+.0f}.."
                               f"{percentile(sorted(values), 0.975) * 1000:+.0f} us")
    return (f"95 % intervals from {resamples} resamples of the rounds, {first} minus {second}: "
            f"p99 difference, median of the rounds {interval(medians)}; "
            f"p99 of all requests {interval(pooled)}")


def ab(binaries, rounds, seconds):
    """Two hookside builds, or a build and nginx (named `nginx`), measured at the same time as
    the bench's side-by-side rounds are: one oha each at RATE, who starts first alternating."""
    work = tempfile.mkdtemp(prefix="hookside-ab-")
    lab = Lab(work, only={"nginx"} & set(binaries))
    try:
        names = []
        for label, binary in zip(["A", "B"], binaries):
            if binary == "nginx":
                names.append("nginx")
                continue
            port, admin = free_port(), free_port()
            lab.ports[label] = port
            lab.pids[label] = lab.start(CONTENDER_CORE, hookside_command(binary, work, port, admin), port)
            names.append(label)
        for name in names:  # warm-up: connections, pools, caches
            fixed_rate(lab, [name], 1)
        results = []
        for r in range(rounds):
            results.append(fixed_rate(lab, names if r % 2 == 0 else names[::-1], seconds))
            print(f"round {r + 1}/{rounds}", file=sys.stderr)
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)
    first, second = names
    return "\n".join([
        f"A: {binaries[0]}", f"B: {binaries[1]}", "",
        f"Side by side at {RATE} requests/s each, {rounds} rounds of {seconds} s: A minus B in each round, "
        "median (min..max), and all requests together (A / B):", "",
        "| | p50 difference ms | p99 difference ms | p99.9 difference ms | rounds A's p99 at or below "
        "| all requests: p50 ms | p99 ms | p99.9 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        side_by_side_row("A - B", results, first, second), "",
        p99_interval(results, first, second)])


def valgrind_count(tool, name, requests, tls=False):
    """Runs `name` under valgrind `tool`, sends `requests` requests one at a time, stops it."""
    work = tempfile.mkdtemp(prefix=f"hookside-{tool}-")
    out = f"{work}/{tool}.out"
    wrapper = ["valgrind", f"--tool={tool}", f"--{tool}-out-file={out}"]
    if tool == "callgrind":
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    lab = None
    try:
        if name.startswith("hookside"):
            lab = Lab(work, hookside_wrapper=wrapper, only={"hookside"}, tls=tls)
        else:
            lab = Lab(work, only=set(), tls=tls)
            command = {"nginx": [NGINX, "-c", f"{work}/nginx.conf", "-p", work],
                       "haproxy": [HAPROXY, "-f", f"{work}/haproxy.cfg", "-db"]}[name]
            lab.pids[name] = lab.start(CONTENDER_CORE, wrapper + command, lab.ports[name])
        if requests:
            subprocess.run(oha(lab.target(name), "-n", str(requests), "-c", "1"),
                           capture_output=True, check=True, timeout=600)
    finally:
        if lab:
            lab.stop()
    with open(out) as f:
        text = f.read()
    shutil.rmtree(work, ignore_errors=True)
    if tool == "callgrind":
        total = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if not total or int(total.group(1)) < 1_000_000:
            raise RuntimeError(f"{name} did not run under callgrind (see {out})")
        return int(total.group(1))
    report = json.loads(text)
    return sum(pp["tb"] for pp in report["pps"]), sum(pp["tbk"] for pp in report["pps"])


def instructions(requests=2000, warmup=200, tls=False):
    lines = [("Upstream over TLS. " if tls else "") + "CPU instructions per request (valgrind callgrind; "
             f"(total with {warmup + requests} requests - total with {warmup}) / {requests}):", "",
             "| server | instructions per request |", "| --- | --- |"]
    only = os.environ.get("ONLY")
    for name in ["nginx", "haproxy", "hookside"] + (["hookside-h2"] if tls else []):
        if only and name != only:
            continue
        low = valgrind_count("callgrind", name, warmup, tls)
        high = valgrind_count("callgrind", name, warmup + requests, tls)
        lines.append(f"| {name} | {(high - low) / requests:,.0f} |")
    if tls:  # allocations: the plain run's figure is the one kept
        return "\n".join(lines)
    low_bytes, low_blocks = valgrind_count("dhat", "hookside", warmup)
    high_bytes, high_blocks = valgrind_count("dhat", "hookside", warmup + requests)
    lines += ["", f"hookside allocations per invocation (valgrind dhat): {(high_blocks - low_blocks) / requests:.1f} "
              f"blocks, {(high_bytes - low_bytes) / requests:,.0f} bytes"]
    return "\n".join(lines)


def link_order():
    """How much of link-order.txt the measured binary has (build.rs, bench/order.py)."""
    path = os.path.join(ROOT, "link-order.txt")
    if not os.path.exists(path):
        return "link order: no link-order.txt (functions in the compiler's order)"
    with open(path) as f:
        wanted = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    try:
        names = subprocess.run(["nm", HOOKSIDE], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        return "link order: not checked (no `nm`: Debian's binutils)"
    found = len(wanted & set(names))
    return (f"link order: {found} of the {len(wanted)} functions of link-order.txt are in the binary"
            + ("" if found == len(wanted) else " (python3 bench/order.py writes it anew)"))


def positive(text):
    """argparse type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not above zero")
    return value


def arguments(argv):
    """The command line, checked before anything starts: a mistyped flag is an error, not a
    12-minute run of the default bench."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py", formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description=__doc__.split("\n\n", 1)[1],
        epilog="environment: HOOKSIDE_BIN and HOOKSIDE_SYSTEM_ALLOC_BIN (the builds measured; "
               "default: target/pgo and target/system-alloc, which bench/run.sh builds), RATE "
               f"(fixed rate, default {RATE}/s), CONNS (connections, default {CONNECTIONS}), "
               "ONLY (instructions of one server: nginx, haproxy, hookside or hookside-h2)")
    parser.add_argument("rounds", nargs="?", type=positive, metavar="ROUNDS",
                        help="rounds of each test (default 5; with --ab, 12)")
    parser.add_argument("seconds", nargs="?", type=positive, metavar="SECONDS",
                        help="seconds per test in a round (default 5)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--instructions-only", action="store_true",
                      help="only the instructions and allocations per request (about a minute)")
    what.add_argument("--no-instructions", action="store_true", help="only the timed tests")
    what.add_argument("--cpu-split", action="store_true",
                      help="user and system CPU time per request of each proxy at saturation")
    what.add_argument("--ab", nargs=2, metavar=("BIN_A", "BIN_B"),
                      help="two hookside builds (either may be `nginx`) side by side at the fixed "
                           "rate: A minus B")
    parser.add_argument("--tls", action="store_true",
                        help="the upstream over TLS (needs openssl); not with --ab or --cpu-split")
    parser.add_argument("--check-args", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tls and (args.ab or args.cpu_split):
        parser.error("--tls measures the bench's own rounds; it does not go with --ab or --cpu-split")
    if args.ab:
        if args.ab.count("nginx") > 1:
            parser.error("--ab takes two builds, one of which may be `nginx`")
        builds = [b for b in args.ab if b != "nginx"]
    else:
        builds = [HOOKSIDE] + ([HOOKSIDE_SYSTEM_ALLOC] if not args.no_instructions and not args.cpu_split else [])
    # bench/run.sh checks the arguments before it builds; the builds are checked after.
    if not args.check_args:
        for build in builds:
            if not shutil.which(build):
                parser.error(f"{build} is not an executable: bash bench/run.sh builds it")
    args.rounds = args.rounds or (12 if args.ab else 5)
    args.seconds = args.seconds or 5
    return args


def main():
    args = arguments(sys.argv[1:])
    if args.check_args:
        return
    if args.ab:
        print(ab(args.ab, args.rounds, args.seconds))
        return
    rounds, seconds = args.rounds, args.seconds
    # `-dirty` when tracked files differ from the commit: the figures are not that commit's.
    commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"hookside bench at commit {commit}, {os.cpu_count()} cores, {rounds} rounds of {seconds} s")
    print(f"{link_order()}\n")
    if args.cpu_split:
        print(cpu_split(seconds))
        return
    if not args.instructions_only:
        print(report_tls(tls_timing(rounds, seconds)) if args.tls else report_timing(timing(rounds, seconds)))
        print()
    if not args.no_instructions:
        print(instructions(tls=args.tls))

if __name__ == "__main__":
    main()
