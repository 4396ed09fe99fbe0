//! Release builds of the binary place the functions that every bot call runs next to each
//! other (`link-order.txt`, written by `bench/order.py`), so that a call touches fewer
//! pages and cache lines of code: about 3 us less at the median at 2,000 calls/s
//! (BENCHMARKS.md, "Code layout").
//!
//! Only where the linker is LLD, which reads `--symbol-ordering-file`: Rust links x86_64
//! Linux with it from 1.90. `HOOKSIDE_LINK_ORDER=0` turns it off (say, for another linker
//! chosen through a config file, which this script cannot see). A name in the file that the
//! binary does not have (it changed since the file was written) is skipped without a
//! warning: the order is an optimisation, never a reason for a build to fail.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER: &str = "link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HOOKSIDE_LINK_ORDER");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let wanted = var("HOOKSIDE_LINK_ORDER") != "0"
        && var("PROFILE") == "release"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !chooses_linker(&var("CARGO_ENCODED_RUSTFLAGS"));
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
    if wanted && order.is_file() && links_with_lld(&var("RUSTC")) {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the flags pick a linker (or linker flavour) of their own.
fn chooses_linker(rustflags: &str) -> bool {
    ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|flag| rustflags.contains(flag))
}

/// Whether `rustc` links x86_64 Linux with its own LLD by default: 1.90 and later.
fn links_with_lld(rustc: &str) -> bool {
    let rustc = if rustc.is_empty() { "rustc" } else { rustc };
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    major > 1 || (major == 1 && minor >= 90)
}
