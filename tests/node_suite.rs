//! Runs the end-to-end Node suite in `tests/js` (the real `socket.io-client` from npm) against the
//! gateway binary built by this package. Needs `node` and `npm` on PATH; `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// The JavaScript client package (`clients/js`), imported by `tests/js/client.test.mjs`.
fn client_js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("js")
}

fn ensure_node_modules(dir: &Path) {
    if dir.join("node_modules").join("socket.io-client").is_dir() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "failed to run `npm ci` in {} (is npm installed? `.ci/run` installs it): {e}",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "`npm ci` in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn node_socket_io_client_suite() {
    let dir = js_dir();
    ensure_node_modules(&dir);
    ensure_node_modules(&client_js_dir());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/js")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.mjs files in tests/js");
    // The protocol conformance suites (tests/js/protocol) count in 100 ms
    // (pingInterval 300, pingTimeout 200): one file at a time, before the
    // rest.
    let mut protocol: Vec<String> = std::fs::read_dir(dir.join("protocol"))
        .expect("tests/js/protocol")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .map(|n| format!("protocol/{n}"))
        .collect();
    protocol.sort();
    assert!(
        !protocol.is_empty(),
        "no *.test.mjs files in tests/js/protocol"
    );
    run_node(&dir, &protocol, "1");
    let concurrency = std::env::var("NODE_TEST_CONCURRENCY").unwrap_or_else(|_| "2".into());
    run_node(&dir, &files, &concurrency);
}

/// Runs `node --test` on `files` (relative to `dir`) against the gateway
/// binary; panics with node's output when a test fails.
fn run_node(dir: &Path, files: &[String], concurrency: &str) {
    let out = Command::new("node")
        .arg("--test")
        .arg(format!("--test-concurrency={concurrency}"))
        .arg("--test-reporter=spec")
        .args(files)
        .current_dir(dir)
        .env("GATEWAY_BIN", env!("CARGO_BIN_EXE_socket-gateway"))
        .output()
        .expect("failed to run `node` (is Node.js installed? `.ci/run` installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node test suite failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // On success, show node's summary (visible with --nocapture).
    let tail: Vec<&str> = stdout.lines().rev().take(12).collect();
    for line in tail.into_iter().rev() {
        println!("{line}");
    }
}
