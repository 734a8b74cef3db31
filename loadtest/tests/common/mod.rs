//! What the harness's integration tests share: child processes killed when dropped, a free
//! port, the gateway binary, waiting for a server's "listening on" line, and one `loadtest`
//! run read back from its `--json` report.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `$GATEWAY_BIN`, else `<workspace>/target/debug/socket-gateway`; `None` (saying the test
/// is skipped) when neither exists.
pub fn gateway_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/socket-gateway");
    if !p.exists() {
        eprintln!(
            "SKIPPED: no gateway binary; run `cargo build` at the workspace root or set GATEWAY_BIN"
        );
        return None;
    }
    Some(p)
}

/// Starts `cmd` and waits until it prints "listening on".
pub fn spawn_listening(cmd: &mut Command, what: &str) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not report listening"));
    proc
}

/// Runs `loadtest ARGS --json FILE`, shows its output, and returns the report.
pub fn loadtest_json(name: &str, args: &[&str]) -> serde_json::Value {
    let json = std::env::temp_dir().join(format!("loadtest-{name}-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running loadtest");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "loadtest {name} exited with {}",
        out.status
    );
    let v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    v
}
