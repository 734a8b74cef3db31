use socket_gateway::cli::{self, Cli, Command};

/// jemalloc, not glibc's malloc: its size classes keep the long-lived
/// records of sockets apart from the short-lived buffers of the requests that
/// opened them, so a storm of handshakes (or a client's polling before its
/// upgrade) leaves whole free pages rather than holes between records, and
/// its background threads give them back to the system within a second or
/// two of a storm (BENCHMARKS.md, "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Read by jemalloc at startup (its documented `malloc_conf` symbol): purge
/// freed pages from background threads, a second after they were freed, in
/// one step (no lazily freed stage whose pages would still count as ours).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() {
    let cli = match socket_gateway::config_file::parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("socket-gateway: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(cli::log_level(&cli.command))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("socket-gateway: {e}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let (cfg, dev) = match &cli.command {
        Command::Token(a) => {
            println!("{}", cli::mint_token(a)?);
            return Ok(());
        }
        Command::Config(a) => {
            if !a.print_default {
                return Err("config: nothing to do (try --print-default)".into());
            }
            print!("{}", socket_gateway::config_file::default_file());
            return Ok(());
        }
        Command::Serve(a) => cli::serve_config(a)?,
        Command::ProtocolSuite(a) => (cli::suite_config(a)?, None),
    };
    let shards = cfg.shards;
    let running = socket_gateway::run::start(cfg)?;
    running.handle_signals()?;
    if let Some(t) = dev {
        println!(
            "No --jwt-secret given: generated a secret for this run. Ready tokens (valid 24 h):"
        );
        println!("  user token (sub=user1): {}", t.user);
        println!("  admin token (sub=admin): {}", t.admin);
    }
    println!(
        "socket-gateway listening on http://{} (shards: {shards})",
        running.addr
    );
    println!(
        "admin page: http://{0}/socket   metrics: http://{0}/metrics",
        running.addr
    );
    running.finish()?;
    Ok(())
}
