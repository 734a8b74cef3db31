use socket_gateway::cli::{self, Cli, Command};

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
