//! Fuzzes loading a webhook file: any bytes, parsed and compiled as `serve` would. It must
//! never panic; every failure must be a located problem.
//!
//! Run with: bash fuzz/run.sh
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use hookside::config::compile::compile;
use hookside::config::raw::parse;
use hookside::config::source::SourceFile;
use hookside::config::Settings;
use hookside::upstream::Upstream;
use libfuzzer_sys::fuzz_target;

fn upstream() -> &'static Upstream {
    static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
    UPSTREAM.get_or_init(|| Upstream::new(Vec::new()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = SourceFile::new(Path::new("/nonexistent/fuzz.toml").into(), text.to_owned());
    match parse(&source) {
        Err(problems) => assert!(!problems.is_empty()),
        Ok(def) => {
            if let Err(problems) = compile(&def, &def.fields, 0, &Settings::default(), upstream()) {
                assert!(!problems.is_empty());
                for problem in problems {
                    assert_eq!(problem.path, Path::new("/nonexistent/fuzz.toml"));
                }
            }
        }
    }
});
