"""Writes link-order.txt: the functions of the binary that every bot call runs.

build.rs hands the file to the linker (LLD's --symbol-ordering-file), which places those
functions next to each other, most instructions first; BENCHMARKS.md ("Code layout") has
what that gains. A function counts when it runs more with more calls: callgrind counts
instructions per function (names left mangled, as the linker knows them) with 200 calls,
then with 2,200, and only the difference is kept, so start-up and loading are left out;
so is what adds less than one instruction per call (work done now and then, not per call).
The calls are the bench's webhook, from 32 connections at 300 calls/s, as in the
fixed-rate test.

Run after a change to the code, the dependencies, the compiler or pgo.profdata (names carry a
hash, and the profile changes what is inlined, so a file from an older build matches less of
the new one; bench/run.py reports how much still matches, and build.rs warns when the
compiler is not the one named on the file's first line, a comment to the linker). It reads
the build the bench measures, the one with the profile (the line bench/run.sh builds it with):

    RUSTFLAGS="-Cprofile-use=$PWD/pgo.profdata" cargo build --release --locked \
        --bin hookside --target-dir target/pgo && python3 bench/order.py      # about 5 minutes
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ORDER = os.path.join(run.ROOT, "link-order.txt")


def instructions_by_function(calls):
    """Instructions per function of hookside's own binary (mangled names) after `calls` calls."""
    work = tempfile.mkdtemp(prefix="hookside-order-")
    out = f"{work}/callgrind.out"
    wrapper = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}"]
    lab = run.Lab(work, hookside_wrapper=wrapper, only={"hookside"})
    try:
        subprocess.run(run.oha(lab.target("hookside"), "-n", str(calls), "-c", "32", "-q", "300"),
                       capture_output=True, check=True, timeout=600)
    finally:
        lab.stop()
    annotated = subprocess.run(["callgrind_annotate", "--threshold=100", out],
                               capture_output=True, text=True, check=True).stdout
    shutil.rmtree(work, ignore_errors=True)
    binary = os.path.realpath(run.HOOKSIDE)
    counts = {}
    # "  5,951,000 ( 8.46%)  ???:_ZN...E [/path/to/hookside]"; recursion adds "'2".
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S+) \[(.+)\]\s*$", line)
        if not match or os.path.realpath(match.group(3)) != binary:
            continue
        name = match.group(2).rsplit(":", 1)[-1].split("'")[0]
        counts[name] = counts.get(name, 0) + int(match.group(1).replace(",", ""))
    if not counts:
        raise RuntimeError("callgrind counted no function of the binary")
    return counts


def main():
    # No arguments: --help shows what the script does, anything else is a mistake.
    argparse.ArgumentParser(prog="bench/order.py", description=__doc__, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    few, many = instructions_by_function(200), instructions_by_function(2200)
    per_call = {name: (count - few.get(name, 0)) / 2000 for name, count in many.items()}
    # At least one instruction per call: what runs now and then (a timer, a thread of the
    # blocking pool, the cached Date header) also grows with the run's length, by a little.
    hot = sorted((name for name, count in per_call.items() if count >= 1),
                 key=lambda name: -per_call[name])
    # The names' hashes depend on the compiler: build.rs warns when another one builds.
    version = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    with open(ORDER, "w") as f:
        f.write(f"# {version}\n" + "".join(f"{name}\n" for name in hot))
    print(f"{ORDER}: {len(hot)} functions, {sum(per_call[n] for n in hot):,.0f} instructions per call")


if __name__ == "__main__":
    main()
