use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::connect::{self, Options};
use loadtest::msgs::{self, CoCorrection, Membership, Scenario};
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
    /// S subscribers over C channels, P publishers at a total rate (or --max); end-to-end
    /// latency, deliveries/s, lost/duplicated/out-of-order messages.
    Fanout(MsgArgs),
    /// A fanout with connections that connect, join, leave and disconnect at --churn-rate.
    Churn(MsgArgs),
    /// Pairs of sockets sending each other direct messages.
    Direct(MsgArgs),
    /// A trivial local sender, not a gateway: accepts websocket Socket.IO connections, acks
    /// their join/subscribe, then streams pre-encoded RealtimeEvent frames to each as fast as
    /// the socket takes them (flood: the harness's own ingest rate), or with --publish-rate R
    /// writes one frame to every subscriber R times a second (paced: the floor latency of a
    /// fan-out on this machine; run `fanout --publishers 0 --rate R` against it), or with
    /// --relay writes one frame to every subscriber for each publish a client sends (the floor
    /// of a fan-out that starts with a client's publish; run `fanout --publishers 1 --rate R`).
    SinkServer {
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: String,
        /// Flood mode: frames per pre-encoded batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Publishes per second, each one frame written to every subscribed connection
        /// (stamped with its scheduled time); 0 = flood mode.
        #[arg(long, default_value_t = 0.0)]
        publish_rate: f64,
        /// Relay mode: each `publish` a client sends is written (its `seq` and `sent_ns`) to
        /// every subscribed connection, then acknowledged, as a gateway does.
        #[arg(long, conflicts_with = "publish_rate")]
        relay: bool,
    },
}

#[derive(clap::Args, Clone)]
struct MsgArgs {
    /// Server URL; repeat (or comma-separate) for several instances: subscribers (and the
    /// second side of direct pairs) are spread over them, publishers use the first.
    #[arg(long, default_value = "http://127.0.0.1:3000", value_delimiter = ',')]
    url: Vec<String>,
    #[arg(long, env = "LOADTEST_JWT_SECRET")]
    jwt_secret: String,
    #[arg(long, default_value_t = 1000)]
    subscribers: u64,
    #[arg(long, default_value_t = 10)]
    channels: u64,
    #[arg(long, default_value_t = 4)]
    publishers: u64,
    /// direct: number of socket pairs
    #[arg(long, default_value_t = 100)]
    pairs: u64,
    /// Total messages per second over all senders (publishes for fanout, directs for direct)
    #[arg(long, conflicts_with = "max")]
    rate: Option<f64>,
    /// Send as fast as the window of outstanding acks per sender allows
    #[arg(long)]
    max: bool,
    /// Outstanding acks per sender with --max
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// With --max, also hold a sender back while more than this many of its messages (times
    /// their recipients in this process) are not yet delivered; 0 = bounded by acks only.
    /// Servers may ack a publish before fanning it out, so acks alone do not bound the queues.
    #[arg(long, default_value_t = 16)]
    delivery_window: u64,
    /// Seconds measured (after the warmup)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before the measurement starts
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Longest wait for in-flight deliveries after the senders stop
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// How subscribers get a channel's events
    #[arg(long, value_enum, default_value_t = Membership::Join)]
    membership: Membership,
    /// Churn connections (connect, join, leave, disconnect) started per second during the run
    #[arg(long, default_value_t = 0.0)]
    churn_rate: f64,
    /// Coordinated-omission correction (rate mode)
    #[arg(long, value_enum, default_value_t = CoCorrection::Intended)]
    co: CoCorrection,
    /// Local addresses to spread connections over, e.g. 127.0.0.1,127.0.0.2 (with
    /// --processes N and none given, process i uses 127.0.0.(i+1))
    #[arg(long)]
    source_addrs: Option<String>,
    /// Run as N processes (each with a slice of the subscribers/pairs; publishers and churn in
    /// the first) and merge their results
    #[arg(long, default_value_t = 1)]
    processes: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Initial read buffer per connection, bytes (grows for larger frames)
    #[arg(long, default_value_t = 8192)]
    read_buffer: usize,
    /// Offer permessage-deflate (RFC 7692, no context takeover) and inflate what arrives
    /// compressed; the report gives bytes on the wire per delivery either way
    #[arg(long)]
    deflate: bool,
    /// Each published event's data carries a realistic chat message (~400 bytes of JSON)
    /// besides the accounting fields
    #[arg(long)]
    chat: bool,
    /// Connections being set up at once
    #[arg(long, default_value_t = 2000)]
    max_inflight: u64,
    /// Seconds allowed for connecting and joining everyone
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
    #[arg(long)]
    quiet: bool,
    /// (internal) this process's index/count: `i/n`
    #[arg(long, hide = true)]
    child: Option<String>,
    /// (internal) channel name tag shared by the processes of a run
    #[arg(long, hide = true)]
    run_id: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Fanout(a) => msg_main(Scenario::Fanout, a),
        Cmd::Churn(mut a) => {
            if a.churn_rate <= 0.0 {
                a.churn_rate = 100.0;
            }
            msg_main(Scenario::Fanout, a)
        }
        Cmd::Direct(a) => msg_main(Scenario::Direct, a),
        Cmd::SinkServer {
            listen,
            batch,
            publish_rate,
            relay,
        } => match loadtest::sink::serve(&listen, batch, publish_rate, relay) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
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

fn msg_main(scenario: Scenario, a: MsgArgs) -> ExitCode {
    let report = if a.processes > 1 && a.child.is_none() {
        msgs::run_processes(a.processes, a.json.is_some())
    } else {
        run_msgs(scenario, &a)
    };
    match report {
        Ok(r) => {
            if a.child.is_none() {
                print!("{}", r.table());
            }
            if let Some(path) = &a.json {
                let text = serde_json::to_string_pretty(&r).expect("serializable");
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("error: writing {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            if r.conn_failed > 0 || r.dropped > 0 {
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

fn run_msgs(scenario: Scenario, a: &MsgArgs) -> Result<msgs::Report, String> {
    let child = match a.child.as_deref() {
        None => None,
        Some(c) => {
            let (i, n) = c.split_once('/').ok_or("--child i/n")?;
            Some((
                i.parse::<u64>().map_err(|_| "--child i/n")?,
                n.parse::<u64>().map_err(|_| "--child i/n")?,
            ))
        }
    };
    let mut source_addrs = match a.source_addrs.as_deref() {
        None => vec![],
        Some(s) => parse_source_addrs(s)?,
    };
    if source_addrs.is_empty() {
        if let Some((i, _)) = child {
            source_addrs.push(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                127,
                0,
                0,
                (i + 1).min(254) as u8,
            )));
        }
    }
    if a.rate.is_none() && !a.max {
        return Err("give --rate R or --max".into());
    }
    let run_id = a.run_id.clone().unwrap_or_else(msgs::new_run_id);
    let o = msgs::Options {
        scenario,
        urls: a.url.clone(),
        jwt_secret: a.jwt_secret.clone(),
        subscribers: a.subscribers,
        channels: a.channels,
        publishers: a.publishers,
        pairs: a.pairs,
        rate: a.rate,
        window: a.window.max(1),
        delivery_window: a.delivery_window,
        duration: a.duration,
        warmup: a.warmup,
        drain: a.drain,
        membership: a.membership,
        churn_rate: a.churn_rate,
        source_addrs,
        co: a.co,
        child,
        run_id,
        read_buffer: a.read_buffer,
        deflate: a.deflate,
        chat: a.chat,
        max_inflight: a.max_inflight.max(1),
        setup_timeout: a.setup_timeout,
        quiet: a.quiet,
    };
    msgs::run(&o)
}
