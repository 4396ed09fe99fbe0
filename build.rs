//! Release builds of the binary place the functions that every bot call runs next to each
//! other (`link-order.txt`, written by `bench/order.py`), so that a call touches fewer
//! pages of code: 2 to 5 us less at the median at 2,000 calls/s (BENCHMARKS.md, "Code
//! layout").
//!
//! Only where the linker takes the list (`--symbol-ordering-file`: LLD, which rustup's Rust
//! uses on x86_64 Linux from 1.90, and mold): a probe links an empty program with the same
//! rustc, target, flags and linker, and the list is passed only if that link succeeds.
//! `HOOKSIDE_LINK_ORDER=0` turns it off. A name in the list that the binary does not have
//! is skipped without a warning: the order is an optimisation, never a reason for a build
//! to fail.
//!
//! A build with the committed profile (`-Cprofile-use=.../pgo.profdata`, as the Dockerfile
//! and `bench/` build) gets a warning when the compiler is not the one `pgo-rustc.txt` next
//! to the profile names: rustc builds either way, with little or none of the profile used.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ORDER: &str = "link-order.txt";
/// The compiler `pgo.profdata` was written for, next to it (`bench/pgo.py` writes both).
const PROFILE_COMPILER: &str = "pgo-rustc.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed={PROFILE_COMPILER}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HOOKSIDE_LINK_ORDER");
    check_profile();
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
    if var("HOOKSIDE_LINK_ORDER") == "0"
        || var("PROFILE") != "release"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || !order.is_file()
    {
        return;
    }
    // `-Xlinker` pairs, not `-Wl,`: a comma in the path would split it.
    let args = [
        "-Xlinker".to_owned(),
        format!("--symbol-ordering-file={}", order.display()),
        "-Xlinker".to_owned(),
        "--no-warn-symbol-ordering".to_owned(),
    ];
    if !links_with(&args) {
        println!(
            "cargo:warning=the linker does not take --symbol-ordering-file: {ORDER} is not used"
        );
        return;
    }
    for arg in &args {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    // The names carry hashes that depend on the compiler's version.
    let written = fs::read_to_string(&order)
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# "))
        .map(str::to_owned)
        .unwrap_or_default();
    let current = rustc_version();
    if written != current {
        println!(
            "cargo:warning={ORDER} was written with {written:?}, this is {current:?}: few of \
             its names match (python3 bench/order.py writes it anew)"
        );
    }
}

/// Warns when the flags use a `pgo.profdata` whose `pgo-rustc.txt` names another compiler.
fn check_profile() {
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let Some(profile) = flags
        .split('\x1f')
        // `-Cprofile-use=PATH`, or `-C` then `profile-use=PATH`.
        .find_map(|flag| {
            flag.strip_prefix("-C")
                .unwrap_or(flag)
                .strip_prefix("profile-use=")
        })
        .map(Path::new)
        .filter(|profile| {
            profile
                .file_name()
                .is_some_and(|name| name == "pgo.profdata")
        })
    else {
        return;
    };
    let named = profile.with_file_name(PROFILE_COMPILER);
    let written = fs::read_to_string(&named).unwrap_or_default();
    let current = rustc_version();
    if written.trim() != current {
        println!(
            "cargo:warning={} is for {:?}, this is {current:?}: little or none of it applies \
             (python3 bench/pgo.py writes one for this compiler)",
            profile.display(),
            written.trim()
        );
    }
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_default()
}

fn rustc() -> Command {
    let rustc = var("RUSTC");
    Command::new(if rustc.is_empty() { "rustc" } else { &rustc })
}

/// `rustc --version`'s line, as `bench/order.py` writes it at the top of the list.
fn rustc_version() -> String {
    rustc()
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Whether an empty program links for the target with `args` added, as this package's
/// binary would (the same rustc, flags and linker).
fn links_with(args: &[String]) -> bool {
    let out = PathBuf::from(var("OUT_DIR"));
    let source = out.join("link-probe.rs");
    if fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let mut probe = rustc();
    probe
        .arg(&source)
        .arg("-o")
        .arg(out.join("link-probe"))
        .args(["--target", &var("TARGET")]);
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    probe.args(flags.split('\x1f').filter(|flag| !flag.is_empty()));
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        probe.arg(format!("-Clinker={linker}"));
    }
    probe.args(args.iter().map(|arg| format!("-Clink-arg={arg}")));
    probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
