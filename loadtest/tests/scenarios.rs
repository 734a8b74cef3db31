//! Smoke runs of the message scenarios against a real gateway (a few seconds each): fanout,
//! direct, churn, and fanout split over two processes. They check the accounting is whole
//! (everything published arrives once, in order) — never a timing.
//!
//! Uses `$GATEWAY_BIN` if set, else builds the workspace's gateway (see
//! [`common::gateway_bin`]); the cluster test needs `redis-server` in PATH. Neither is
//! optional: without them the tests fail.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, gateway_bin, loadtest_json, spawn_listening, Proc};

/// A gateway (killed when dropped) and its port.
struct Server {
    _proc: Proc,
    port: u16,
}

const SECRET: &str = "smoke-secret";

/// Without the per-socket event limit (as `scripts/compare.sh` runs it): a
/// publisher at `--max` may exceed 1,000 events/s, and a refused publish
/// leaves a gap in every subscriber's sequence that the harness counts lost.
fn gateway() -> Server {
    gateway_with(&["--max-events-per-sec", "0"])
}

fn gateway_with(extra: &[&str]) -> Server {
    gateway_on(2, extra)
}

fn gateway_on(shards: usize, extra: &[&str]) -> Server {
    let bin = gateway_bin();
    let port = free_port();
    let proc = spawn_listening(
        Command::new(&bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--shards",
                &shards.to_string(),
                "--no-pin",
            ])
            .args(["--jwt-secret", SECRET, "--log-level", "warn"])
            .args(extra),
        "gateway",
    );
    Server { _proc: proc, port }
}

fn run(server: &Server, name: &str, args: &[&str]) -> serde_json::Value {
    run_urls(&[server], name, args)
}

fn run_urls(servers: &[&Server], name: &str, args: &[&str]) -> serde_json::Value {
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://127.0.0.1:{}", s.port))
        .collect();
    let urls = urls.join(",");
    let common = [
        "--url",
        urls.as_str(),
        "--jwt-secret",
        SECRET,
        "--warmup",
        "0.5",
        "--duration",
        "1.5",
        "--quiet",
    ];
    loadtest_json(name, &[args, &common[..]].concat())
}

fn whole(v: &serde_json::Value, conns: u64) {
    assert_eq!(v["conn_attempted"], conns);
    assert_eq!(v["conn_ok"], conns);
    assert_eq!(v["conn_failed"], 0);
    assert_eq!(v["dropped"], 0);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["duplicated"], 0);
    assert_eq!(v["out_of_order"], 0);
    assert_eq!(v["misrouted"], 0);
    assert!(v["sent"].as_u64().unwrap() > 0);
    assert_eq!(v["acks_ok"], v["sent"]);
    assert!(v["latency"]["count"].as_u64().unwrap() > 0);
    assert!(!v["latency_hist_v2"].as_str().unwrap().is_empty());
}

#[test]
fn fanout_rate_and_max() {
    let gw = gateway();
    let v = run(
        &gw,
        "fanout-rate",
        &[
            "fanout",
            "--subscribers",
            "60",
            "--channels",
            "3",
            "--publishers",
            "2",
            "--rate",
            "200",
        ],
    );
    whole(&v, 62);
    // every publish reaches the 20 subscribers of its channel
    assert_eq!(
        v["deliveries"].as_u64().unwrap(),
        v["sent"].as_u64().unwrap() * 20
    );
    let v = run(
        &gw,
        "fanout-max",
        &[
            "fanout",
            "--subscribers",
            "40",
            "--channels",
            "2",
            "--publishers",
            "2",
            "--max",
            "--window",
            "8",
            "--membership",
            "subscribe",
        ],
    );
    whole(&v, 42);
    assert_eq!(
        v["deliveries"].as_u64().unwrap(),
        v["sent"].as_u64().unwrap() * 20
    );
}

#[test]
fn fanout_over_two_processes() {
    let gw = gateway();
    let v = run(
        &gw,
        "fanout-procs",
        &[
            "fanout",
            "--subscribers",
            "40",
            "--channels",
            "4",
            "--publishers",
            "2",
            "--rate",
            "200",
            "--processes",
            "2",
            "--source-addrs",
            "127.0.0.1",
        ],
    );
    whole(&v, 42);
    assert_eq!(v["processes"], 2);
    assert_eq!(
        v["deliveries"].as_u64().unwrap(),
        v["sent"].as_u64().unwrap() * 10
    );
}

#[test]
fn direct_pairs() {
    let gw = gateway();
    let v = run(&gw, "direct", &["direct", "--pairs", "10", "--rate", "400"]);
    whole(&v, 20);
    assert_eq!(v["deliveries"], v["sent"]);
}

#[test]
fn churn_during_fanout() {
    let gw = gateway();
    let v = run(
        &gw,
        "churn",
        &[
            "churn",
            "--subscribers",
            "30",
            "--channels",
            "3",
            "--publishers",
            "1",
            "--rate",
            "100",
            "--churn-rate",
            "50",
        ],
    );
    // churn connections come on top of the 31 of the fanout
    assert!(v["churn_completed"].as_u64().unwrap() > 0);
    assert_eq!(v["churn_failed"], 0);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["duplicated"], 0);
    assert_eq!(v["out_of_order"], 0);
    assert_eq!(v["dropped"], 0);
    assert!(v["presence_events"].as_u64().unwrap() > 0);
}

/// Two gateways clustered through a private redis-server: subscribers and the second side of
/// the pairs spread over both, publishers on the first, so cross-instance delivery is counted.
#[test]
fn two_instances_through_redis() {
    let (_redis, a, b) = clustered_pair("lt-smoke", &[]);
    let v = run_urls(
        &[&a, &b],
        "cluster-fanout",
        &[
            "fanout",
            "--subscribers",
            "40",
            "--channels",
            "2",
            "--publishers",
            "2",
            "--rate",
            "200",
        ],
    );
    whole(&v, 42);
    assert_eq!(
        v["deliveries"].as_u64().unwrap(),
        v["sent"].as_u64().unwrap() * 20
    );
    let v = run_urls(
        &[&a, &b],
        "cluster-direct",
        &["direct", "--pairs", "6", "--rate", "200"],
    );
    whole(&v, 12);
    assert_eq!(v["deliveries"], v["sent"]);
}

/// A join storm on one shard: 10,000 members join one channel at once (over four client
/// processes). Above `--presence-max-members` (1,000) no per-member presence goes out, so none is
/// cut as a slow consumer (before counts, all 10,000 were); each gets the channel's member count,
/// and every publish reaches all of them.
#[test]
fn join_storm_of_ten_thousand_on_one_shard() {
    let gw = gateway_on(1, &["--max-events-per-sec", "0"]);
    let v = run(
        &gw,
        "join-storm",
        &[
            "fanout",
            "--subscribers",
            "10000",
            "--channels",
            "1",
            "--publishers",
            "1",
            "--rate",
            "2",
            "--processes",
            "4",
            "--source-addrs",
            "127.0.0.1",
        ],
    );
    storm_whole(&v, 10_000);
}

/// 3,000 members of one channel on two instances through Redis: the count is the cluster's and
/// reaches every member, nobody is cut, every publish reaches all 3,000.
#[test]
fn join_storm_of_three_thousand_on_two_instances() {
    let (_redis, a, b) = clustered_pair("lt-storm", &["--max-events-per-sec", "0"]);
    let v = run_urls(
        &[&a, &b],
        "join-storm-cluster",
        &[
            "fanout",
            "--subscribers",
            "3000",
            "--channels",
            "1",
            "--publishers",
            "1",
            "--rate",
            "2",
            "--processes",
            "2",
            "--source-addrs",
            "127.0.0.1",
        ],
    );
    storm_whole(&v, 3_000);
}

/// What a join storm of `members` must come to: all connected and none dropped, each got a
/// member count, each publish reached every member once and in order.
fn storm_whole(v: &serde_json::Value, members: u64) {
    eprintln!(
        "{members} members: set up in {} s, {} presence frames ({} counts)",
        v["setup_secs"], v["presence_events"], v["presence_counts"]
    );
    whole(v, members + 1);
    assert_eq!(v["drop_reasons"], serde_json::json!({}));
    assert_eq!(
        v["members_with_count"], members,
        "every member got the count"
    );
    // Per-member presence goes out only while the channel has at most 1,000 members: about
    // 1,000²/2 join frames (more when joins race the count). Deciding on a count that lags the
    // storm sent 2.8 million here.
    let per_member =
        v["presence_events"].as_u64().unwrap() - v["presence_counts"].as_u64().unwrap();
    assert!(
        per_member <= 1_000_000,
        "{per_member} per-member presence frames in a storm of {members}"
    );
    assert_eq!(
        v["deliveries"].as_u64().unwrap(),
        v["sent"].as_u64().unwrap() * members
    );
}

/// A private redis-server on a free port (killed when dropped) and its URL. Fails the test when
/// redis-server is not in PATH.
fn private_redis() -> (Proc, String) {
    let port = free_port();
    let redis = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(c) => Proc(c),
        Err(e) => panic!("starting redis-server (it must be in PATH for this test): {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not accept connections within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (redis, format!("redis://127.0.0.1:{port}"))
}

/// A private redis-server and two gateways clustered through it (with `extra` flags).
fn clustered_pair(prefix: &str, extra: &[&str]) -> (Proc, Server, Server) {
    let (redis, url) = private_redis();
    let prefix = format!("{prefix}-{}", std::process::id());
    let mut args = vec![
        "--redis-url",
        url.as_str(),
        "--redis-prefix",
        prefix.as_str(),
    ];
    args.extend_from_slice(extra);
    let a = gateway_with(&args);
    let b = gateway_with(&args);
    (redis, a, b)
}
