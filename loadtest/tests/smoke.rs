//! Smoke test against a real gateway: 50 connections for ~2 seconds, all must succeed.
//!
//! Uses `$GATEWAY_BIN` if set, else `<workspace>/target/debug/socket-gateway` (build it with
//! `cargo build` at the workspace root). Skips, saying so, when neither exists.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/socket-gateway");
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn fifty_connections_against_the_gateway() {
    let Some(bin) = gateway_bin() else {
        eprintln!(
            "SKIPPED: no gateway binary; run `cargo build` at the workspace root or set GATEWAY_BIN"
        );
        return;
    };
    let port = free_port();
    let secret = "smoke-secret";
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            "1",
            "--no-pin",
        ])
        .args(["--jwt-secret", secret, "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let _server = Server(child);
    // Wait for the listening line.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("gateway did not report listening");

    let json = std::env::temp_dir().join(format!("loadtest-smoke-{}.json", std::process::id()));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["connect", "--url", &format!("http://127.0.0.1:{port}")])
        .args([
            "--connections",
            "50",
            "--rate",
            "100",
            "--hold",
            "1.5",
            "--settle",
            "0.2",
        ])
        .args([
            "--jwt-secret",
            secret,
            "--server-pid",
            &pid.to_string(),
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "loadtest exited with {}", out.status);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(v["attempted"], 50);
    assert_eq!(v["succeeded"], 50);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["open_at_end"], 50);
    assert_eq!(v["latency"]["count"], 50);
    assert!(v["server"]["connected"]["rss_kib"].as_u64().unwrap() > 0);
    assert!(started.elapsed() < Duration::from_secs(30));
}
