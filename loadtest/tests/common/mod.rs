//! What the harness's integration tests share: child processes killed when dropped, a free
//! port, the gateway binary (built if need be; never missing, never stale), waiting for a
//! server's "listening on" line, and one `loadtest` run read back from its `--json` report.
//! Every wait has a limit, so a stuck process fails its test instead of hanging it.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on now, below Linux's ephemeral range (32768+): a
/// port in that range can become the local port of one of the load client's
/// thousands of connections before the server binds it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        // A random start per call (RandomState is seeded per instance).
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 24000 + (h.finish() % 6000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// How long `cargo build` of the gateway may take: a cold debug build on a small, busy
/// machine takes minutes.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long one `loadtest` run may take; the runs here last a few seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The gateway binary the tests run: `$GATEWAY_BIN` if set (it must exist), else the
/// workspace's debug build, which is brought up to date first with `cargo build -p
/// socket-gateway --bin socket-gateway` (a no-op when it is), so that an old binary is never
/// tested by mistake. Built once per test process. Panics, saying why, when there is none.
///
/// Building from inside a test is safe: `cargo test` releases the build lock before it runs
/// the test binaries, so the nested cargo does not wait for the outer one.
pub fn gateway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("GATEWAY_BIN") {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "GATEWAY_BIN={} is not a file; unset it to test the workspace's build",
                p.display()
            );
            return p;
        }
        build_gateway()
    })
    .clone()
}

/// Runs `cargo build` for the gateway binary and returns the executable it reports.
fn build_gateway() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(env!("CARGO"));
    // What `cargo test` sets for this test binary (CARGO_PKG_NAME=loadtest, ...) is not the
    // environment of a build: some build scripts (ring's) ask cargo to rebuild when such a
    // variable changes, so passing them on would rebuild those crates on every switch
    // between `cargo build` in a shell and this.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "CARGO_CFG_",
            "OUT_DIR",
        ]
        .iter()
        .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&*k);
        }
    }
    let mut child = cmd
        .args(["build", "-p", "socket-gateway", "--bin", "socket-gateway"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(&workspace)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("running {} build: {e}", env!("CARGO")));
    let stdout = child.stdout.take().unwrap();
    // Read in a thread so that a full pipe never stalls the build while we wait on it.
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["name"] == "socket-gateway"
            })
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .last()
    });
    let status = wait_timeout(&mut child, BUILD_TIMEOUT)
        .unwrap_or_else(|| panic!("cargo build of the gateway took over {BUILD_TIMEOUT:?}"));
    assert!(
        status.success(),
        "cargo build -p socket-gateway failed ({status}); the tests need the gateway binary"
    );
    let exe = reader
        .join()
        .unwrap()
        .expect("cargo build reported no socket-gateway executable");
    assert!(
        exe.is_file(),
        "{} does not exist after the build",
        exe.display()
    );
    exe
}

/// Waits for `child` at most `limit`; kills it and returns `None` when it runs longer.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running loadtest");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let status = wait_timeout(&mut child, RUN_TIMEOUT);
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    let status =
        status.unwrap_or_else(|| panic!("loadtest {name} ran over {RUN_TIMEOUT:?}; killed"));
    assert!(status.success(), "loadtest {name} exited with {status}");
    let v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    v
}
