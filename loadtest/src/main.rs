use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::connect::{self, Options};
use loadtest::target::parse_source_addrs;

#[derive(Parser)]
#[command(name = "loadtest", about = "Load tests for socket-gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N authenticated Socket.IO connections, hold them, measure the server.
    Connect {
        /// Gateway URL, e.g. http://127.0.0.1:3000 (path defaults to /socket.io/)
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        /// New connections per second
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to hold the connections open after they are all up (and settled)
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Seconds to wait after the last connect before sampling server memory
        #[arg(long, default_value_t = 3.0)]
        settle: f64,
        /// HS256 secret the gateway verifies tokens with
        #[arg(long, env = "LOADTEST_JWT_SECRET")]
        jwt_secret: String,
        /// Local addresses to spread connections over, e.g. 127.0.0.1,127.0.0.2
        #[arg(long)]
        source_addrs: Option<String>,
        /// Gateway process id: sample its RSS/PSS before and after
        #[arg(long)]
        server_pid: Option<u32>,
        /// Write the figures as JSON to this file
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Seconds a connection may take from TCP connect to Socket.IO `40`
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Handshakes allowed in flight at once
        #[arg(long, default_value_t = 5000)]
        max_inflight: u64,
        /// No progress lines on stderr
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Connect {
            url,
            connections,
            rate,
            hold,
            settle,
            jwt_secret,
            source_addrs,
            server_pid,
            json,
            timeout,
            max_inflight,
            quiet,
        } => {
            let source_addrs = match source_addrs.as_deref().map(parse_source_addrs) {
                None => vec![],
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = Options {
                url,
                connections,
                rate,
                hold,
                settle,
                jwt_secret,
                source_addrs,
                server_pid,
                timeout,
                max_inflight,
                quiet,
            };
            match connect::run(&opts) {
                Ok(report) => {
                    print!("{}", report.table());
                    if let Some(path) = json {
                        let text = serde_json::to_string_pretty(&report).expect("serializable");
                        if let Err(e) = std::fs::write(&path, text + "\n") {
                            eprintln!("error: writing {}: {e}", path.display());
                            return ExitCode::FAILURE;
                        }
                    }
                    if report.failed > 0 {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
