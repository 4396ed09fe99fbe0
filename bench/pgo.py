"""Writes pgo.profdata: the profile that release builds for deployment are optimised with,
and pgo-rustc.txt: the compiler it is for (build.rs warns when another builds with it).

LLVM's profile-guided optimisation (rustc's `-Cprofile-use`) lays out and inlines each
function by how often its branches and calls ran. BENCHMARKS.md ("Profile-guided
optimisation") has what that gains. The profile comes from an instrumented build
(`-Cprofile-generate`) serving the bench's lab:

- the bench's webhook (plain lookups, a JSONPath) at 2,000 calls/s, then at saturation, as
  the bench measures it;
- a webhook of Jinja templates (filters, text and typed values in a JSON body, an `if`,
  JSONPaths with a wildcard and a filter), so that minijinja's paths are laid out by how
  they run too;
- the bench's webhook over TLS (`bench/run.py --tls`'s upstream), over HTTP/1.1 and over
  HTTP/2, at 2,000 calls/s each: most companies' APIs are HTTPS, and many speak HTTP/2;
- Run Webhook (`/test`), a metrics scrape and a reload, a few times each.

The raw profile is merged into the indexed file rustc reads by `llvm-profdata`, whose
LLVM must read the compiler's raw format: Debian 12's `llvm-19` package reads rustc
1.95's (LLVM 22). `LLVM_PROFDATA=...` names another one.

It needs what bench/run.sh installs (nginx, wrk, oha, taskset). Run it after a change to the
code on a call's path, the dependencies or the compiler, then bench/order.py. A stale profile
never changes behaviour, only speed: functions whose control flow or name changed (and
callers that inlined them) lose their profile, and a new compiler renames them all:

    python3 bench/pgo.py                                  # about 5 minutes
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

PROFILE = os.path.join(run.ROOT, "pgo.profdata")
COMPILER = os.path.join(run.ROOT, "pgo-rustc.txt")
# What the instrumented build is built into, and where it writes its raw profiles (a fixed
# path: another one would change RUSTFLAGS and rebuild everything).
TARGET = os.path.join(run.ROOT, "target", "pgo-generate")
RAW = os.path.join(TARGET, "profraw")

JINJA_WEBHOOK = """company = "bench"
method = "POST"
url = "http://127.0.0.1:{upstream}/v1/tickets/{{{{ extractedData.orderId | lower }}}}"
[query]
module = "{{{{ moduleId }}}}"
[headers]
X-Reply = "{{{{ reply | upper | replace('?', '') }}}}"
[body]
subject = "Order {{{{ extractedData.orderId }}}}: {{{{ reply }}}}"
priority = "{{{{ extractedData.priority | default(3) }}}}"
urgent = "{{{{ extractedData.priority < 3 }}}}"
answers = "{{{{ extractedData }}}}"
[variables]
carrier = "{{{{ response.order.delivery.carrier | lower }}}}"
late = "{{{{ 'yes' if response.order.status != 'delivered' else 'no' }}}}"
skus = "$.order.items[*].sku"
first = "$.order.items[?@.qty > 1].sku"
"""


def llvm_profdata():
    """The llvm-profdata to merge with: LLVM_PROFDATA, else the newest one installed."""
    if os.environ.get("LLVM_PROFDATA"):
        return os.environ["LLVM_PROFDATA"]
    found = glob.glob("/usr/lib/llvm-*/bin/llvm-profdata")
    if not found:
        found = [shutil.which("llvm-profdata")] if shutil.which("llvm-profdata") else []
    if not found:
        raise SystemExit("no llvm-profdata: install Debian's llvm-19 (apt-get install llvm-19) "
                         "or name one with LLVM_PROFDATA=...")
    return max(found, key=lambda path: int((re.search(r"llvm-(\d+)", path) or [0, 0])[1]))


def build_instrumented():
    env = dict(os.environ, RUSTFLAGS=f"-Cprofile-generate={RAW}")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "hookside",
                    "--target-dir", TARGET], cwd=run.ROOT, env=env, check=True)
    # Build scripts and proc macros were instrumented too, and wrote their profiles.
    shutil.rmtree(RAW, ignore_errors=True)
    return os.path.join(TARGET, "release", "hookside")


def post(url, body=b""):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{url} answered {err.code}: {err.read()[:300]!r}") from err


def train(binary):
    """Serves the workload above with `binary`; its profile is written when it exits."""
    run.HOOKSIDE = binary
    work = tempfile.mkdtemp(prefix="hookside-pgo-")
    lab = None
    try:
        lab = run.Lab(work, only={"hookside"})
        admin = f"http://127.0.0.1:{lab.ports['admin']}"
        run.write(f"{work}/webhooks.d/tickets.toml", JINJA_WEBHOOK.format(upstream=lab.ports["up"]))
        # A second upstream, over TLS, as `run.py --tls` has it.
        run.certificates(work)
        tls_port, h2_port = run.free_port(), run.free_port()
        run.write(f"{work}/tls.conf", run.nginx_upstream_conf(work, "tls", tls_port, h2_port))
        lab.start(run.CLIENT_CORE, [run.NGINX, "-c", f"{work}/tls.conf", "-p", work], tls_port)
        run.write(f"{work}/webhooks.d/https.toml", run.hookside_webhook(tls_port, f"{work}/ca.pem"))
        run.write(f"{work}/webhooks.d/https-h2.toml", run.hookside_webhook(h2_port, f"{work}/ca.pem"))
        report = json.loads(post(f"{admin}/-/reload"))
        loaded = {f.get("name") for f in report.get("files", []) if not f.get("errors")}
        if not {"tickets", "https", "https-h2"} <= loaded:
            raise SystemExit(f"a training webhook did not load: {json.dumps(report)[:800]}")
        bench = lab.target("hookside")
        tickets, https, https_h2 = (bench.replace("/bench", f"/{name}") for name in ("tickets", "https", "https-h2"))
        # Each answers 200 before the load, or the profile would be of errors.
        for url in (bench, tickets, https, https_h2):
            answer = post(url, run.CONVERSATION.encode())
            if b'"status":200' not in answer:
                raise SystemExit(f"{url} did not answer as expected: {answer[:300]!r}")
        for url, seconds in ((bench, 6), (tickets, 3), (https, 3), (https_h2, 3)):
            subprocess.run(run.oha(url, "-z", f"{seconds}s", "-q", str(run.RATE), "-c",
                                   str(run.CONNECTIONS), "--output-format", "quiet"),
                           check=True, capture_output=True)
        subprocess.run(run.pinned(run.CLIENT_CORE, ["wrk", "-t1", f"-c{run.CONNECTIONS}", "-d3s",
                                                    "-s", run.wrk_script(work), bench]),
                       check=True, capture_output=True)
        for _ in range(20):
            post(f"{bench}/test", run.CONVERSATION.encode())
            post(f"{tickets}/test?dry_run=true", run.CONVERSATION.encode())
            urllib.request.urlopen(f"{admin}/metrics", timeout=10).read()
        post(f"{admin}/-/reload")
    finally:
        if lab:
            lab.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    # No arguments: --help shows what the script does, anything else is a mistake.
    argparse.ArgumentParser(prog="bench/pgo.py", description=__doc__, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    missing = [tool for tool in ("nginx", "wrk", "oha", "taskset", "openssl")
               if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: bash bench/run.sh installs them")
    profdata = llvm_profdata()
    # Where the raw profile goes is RUSTFLAGS' business, not the environment's.
    os.environ.pop("LLVM_PROFILE_FILE", None)
    binary = build_instrumented()
    train(binary)
    written = glob.glob(f"{RAW}/*.profraw")
    if len(written) != 1:
        raise SystemExit(f"expected one raw profile from hookside, found {len(written)} in {RAW}")
    # Sparse: functions that never ran are left out (a tenth of the size). They then have no
    # profile and get LLVM's usual static estimates instead of being taken as cold (a
    # trade-off llvm-profdata's documentation notes).
    subprocess.run([profdata, "merge", "--sparse", "-o", PROFILE, *written], check=True)
    shutil.rmtree(RAW, ignore_errors=True)
    compiler = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    run.write(COMPILER, compiler + "\n")
    print(f"wrote {PROFILE} ({os.path.getsize(PROFILE) // 1024} KiB) for {compiler}, "
          f"merged by {profdata}")


if __name__ == "__main__":
    main()
