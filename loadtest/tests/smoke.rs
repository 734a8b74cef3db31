//! Smoke test against a real gateway: 50 connections for ~2 seconds, all must succeed.
//!
//! Uses `$GATEWAY_BIN` if set, else builds the workspace's gateway (see
//! [`common::gateway_bin`]); fails without one.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, gateway_bin, loadtest_json, spawn_listening};

#[test]
fn fifty_connections_against_the_gateway() {
    let bin = gateway_bin();
    let port = free_port();
    let secret = "smoke-secret";
    let server = spawn_listening(
        Command::new(&bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--shards",
                "1",
                "--no-pin",
            ])
            .args(["--jwt-secret", secret, "--log-level", "warn"]),
        "gateway",
    );
    let pid = server.0.id().to_string();
    let url = format!("http://127.0.0.1:{port}");

    let started = Instant::now();
    let v = loadtest_json(
        "smoke",
        &[
            "connect",
            "--url",
            &url,
            "--connections",
            "50",
            "--rate",
            "100",
            "--hold",
            "1.5",
            "--settle",
            "0.2",
            "--jwt-secret",
            secret,
            "--server-pid",
            &pid,
            "--quiet",
        ],
    );
    assert_eq!(v["attempted"], 50);
    assert_eq!(v["succeeded"], 50);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["open_at_end"], 50);
    assert_eq!(v["latency"]["count"], 50);
    assert!(v["server"]["connected"]["rss_kib"].as_u64().unwrap() > 0);
    assert!(started.elapsed() < Duration::from_secs(30));
}
