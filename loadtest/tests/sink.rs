//! Smoke run of `loadtest sink-server --publish-rate` (paced fan-out) with `fanout
//! --publishers 0` against it (a few seconds): the accounting must be whole — never a timing.
//! Needs no gateway.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn paced_sink_fanout_to_fifty() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["sink-server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--publish-rate", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the sink");
    let stdout = child.stdout.take().unwrap();
    let _sink = Sink(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("sink did not report listening");
    // Let it publish a few times first, so that the subscribers come in mid-stream.
    std::thread::sleep(Duration::from_millis(300));

    let json = std::env::temp_dir().join(format!("loadtest-sink-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["fanout", "--url", &format!("http://127.0.0.1:{port}")])
        .args(["--jwt-secret", "smoke-secret", "--subscribers", "50"])
        .args(["--channels", "1", "--publishers", "0", "--rate", "20"])
        .args(["--warmup", "0.5", "--duration", "1.5", "--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("running loadtest");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "loadtest exited with {}", out.status);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);

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
