//! Smoke run of `loadtest sink-server --publish-rate` (paced fan-out) with `fanout
//! --publishers 0` against it (a few seconds): the accounting must be whole — never a timing.
//! Needs no gateway.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, loadtest_json, spawn_listening};

#[test]
fn paced_sink_fanout_to_fifty() {
    let port = free_port();
    let _sink = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(["sink-server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--publish-rate", "20"]),
        "the sink",
    );
    // Let it publish a few times first, so that the subscribers come in mid-stream.
    std::thread::sleep(Duration::from_millis(300));

    let url = format!("http://127.0.0.1:{port}");
    let v = loadtest_json(
        "sink",
        &[
            "fanout",
            "--url",
            &url,
            "--jwt-secret",
            "smoke-secret",
            "--subscribers",
            "50",
            "--channels",
            "1",
            "--publishers",
            "0",
            "--rate",
            "20",
            "--warmup",
            "0.5",
            "--duration",
            "1.5",
            "--quiet",
        ],
    );

    assert_eq!(v["conn_ok"], 50);
    assert_eq!(v["conn_failed"], 0);
    assert_eq!(v["dropped"], 0);
    // The sink started publishing before the subscribers came: each stream starts at the
    // first seq it sees, so no bogus loss.
    assert_eq!(v["lost"], 0);
    assert_eq!(v["duplicated"], 0);
    assert_eq!(v["out_of_order"], 0);
    assert_eq!(v["misrouted"], 0);
    assert!(v["deliveries_in_window"].as_u64().unwrap() > 0);
    let n = v["latency"]["count"].as_u64().unwrap();
    assert!(n > 0);
    // Every publish stamped inside the window reached all 50 subscribers before the client
    // stopped (it waits for a frame stamped after the window on each).
    assert_eq!(n % 50, 0, "latency samples {n} are not whole publishes");
}
