//! A run over several processes (`--processes N`), so that the client is not the bottleneck:
//! the parent re-runs its own command line as N children, each with its share of the
//! connections (`--child i/N`) and the same channel names (`--run-id`); waits until every
//! child says `READY` on stdout (all connected and joined), writes `GO <t0>` to each one's
//! stdin so that all measure the same window, then merges the JSON reports they write.

use std::io::{self, BufRead, Write as _};

use super::report::Report;
use crate::sys::mono_ns;

/// A short tag unique enough to keep runs' channels apart on one server.
pub fn new_run_id() -> String {
    format!("{:x}{:x}", std::process::id(), mono_ns() % 0xffffff)
}

/// Re-runs this command as `n` child processes (`--child i/n`, a shared `--run-id`, a JSON
/// file each), starts them together once all are set up, and merges their reports.
pub fn run_processes(n: u64, _has_json: bool) -> Result<Report, String> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The original arguments minus --processes and --json.
    let mut args = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--processes" || a == "--json" {
            it.next();
            continue;
        }
        if a.starts_with("--processes=") || a.starts_with("--json=") {
            continue;
        }
        args.push(a);
    }
    let run_id = new_run_id();
    let dir = std::env::temp_dir();
    let mut children = Vec::new();
    let mut files = Vec::new();
    for i in 0..n {
        let file = dir.join(format!("loadtest-{run_id}-{i}.json"));
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .args(["--child", &format!("{i}/{n}"), "--run-id", &run_id])
            .arg("--json")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if i > 0 && !args.iter().any(|a| a == "--quiet") {
            cmd.arg("--quiet");
        }
        children.push(
            cmd.spawn()
                .map_err(|e| format!("spawning {}: {e}", exe.display()))?,
        );
        files.push(file);
    }
    // Wait for every READY, then say GO to all.
    let mut readers = Vec::new();
    for c in children.iter_mut() {
        let out = c.stdout.take().expect("piped");
        readers.push(io::BufReader::new(out));
    }
    for (i, r) in readers.iter_mut().enumerate() {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                for c in children.iter_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("process {i} ended before it was ready"));
            }
            if line.trim() == "READY" {
                break;
            }
        }
    }
    let t0 = mono_ns() + 100_000_000;
    for c in children.iter_mut() {
        let stdin = c.stdin.as_mut().expect("piped");
        let _ = stdin.write_all(format!("GO {t0}\n").as_bytes());
        let _ = stdin.flush();
    }
    let mut parts = Vec::new();
    for (i, mut c) in children.into_iter().enumerate() {
        let st = c.wait().map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&files[i])
            .map_err(|e| format!("process {i} ({st}) wrote no report: {e}"))?;
        let _ = std::fs::remove_file(&files[i]);
        parts.push(serde_json::from_str::<Report>(&text).map_err(|e| e.to_string())?);
    }
    Report::merge(&parts)
}
