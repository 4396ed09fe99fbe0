//! hookside's integration tests: real sockets on 127.0.0.1:0, a real upstream server in
//! each test, real files in temp directories, and the real binary for CLI tests.

mod adversarial;
mod bot;
mod cli;
mod errors;
mod files;
mod http1;
mod invoke;
mod metrics;
mod operations;
mod pool;
mod properties;
mod reload;
mod samples;
mod tls;
mod util;
