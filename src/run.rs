//! Starts a configured server: reserve the port, start the shards (each binds
//! it with SO_REUSEPORT), report the address once every shard listens.

use std::net::SocketAddr;
use std::sync::Arc;

use shards::{RuntimeConfig, ShardHandle};

use crate::config::Config;
use crate::edge::server::{bind_reuseport, run_shard};

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub handles: Vec<ShardHandle>,
    pub cfg: Arc<Config>,
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Running {
    /// Handles SIGTERM/SIGINT: the first starts a graceful shutdown (`/readyz`
    /// turns 503 and new handshakes are refused at once; every shard closes
    /// its sockets in batches over `--drain-period`, flushing each; the
    /// process exits within the drain period plus `--shutdown-timeout`
    /// whatever happens); a second exits at once. The instance leaves the
    /// cluster's presence once the shards are done ([`Running::finish`]):
    /// until then its sockets are still there.
    pub fn handle_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let cfg = self.cfg.clone();
        let cluster = self.cluster.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut first = true;
                for sig in signals.forever() {
                    if !first {
                        eprintln!("socket-gateway: second signal {sig}: exiting now");
                        std::process::exit(130);
                    }
                    first = false;
                    tracing::info!(
                        "signal {sig}: draining over {:?}, then shutting down (at most {:?} more)",
                        cfg.drain_period,
                        cfg.shutdown_timeout
                    );
                    cfg.shutdown
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    let deadline = cfg.drain_period + cfg.shutdown_timeout;
                    let cluster = cluster.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(deadline);
                        eprintln!("socket-gateway: shutdown timeout reached; exiting");
                        if let Some(c) = &cluster {
                            c.withdraw(std::time::Duration::from_millis(500));
                        }
                        std::process::exit(0);
                    });
                }
            })?;
        Ok(())
    }
}

impl Running {
    /// Waits for every shard to end (after a shutdown), then leaves the
    /// cluster's presence at once instead of after the heartbeat expiry.
    pub fn finish(self) -> std::io::Result<()> {
        for h in self.handles {
            h.join()?;
        }
        if let Some(c) = &self.cluster {
            c.withdraw(std::time::Duration::from_secs(1));
        }
        Ok(())
    }
}

/// Starts the shards and returns once all of them listen.
pub fn start(cfg: Config) -> std::io::Result<Running> {
    // SO_REUSEPORT would let this process join another's port and take a
    // share of its connections without a word.
    if cfg.listen.port() != 0 && !cfg.share_port {
        let grace = std::time::Duration::from_secs(3);
        if let Some(other) = crate::edge::port::listener_after(cfg.listen, grace) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is taken: another process listens on {other} (pick another --listen, stop it, or pass --share-port to share its connections on purpose)",
                    cfg.listen
                ),
            ));
        }
    }
    // Bound but not listening: reserves the port (resolving port 0) without
    // joining the SO_REUSEPORT group that receives connections.
    let probe = bind_reuseport(cfg.listen, false)?;
    let addr = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an inet address"))?;
    let cfg = Arc::new(cfg);
    let rt = RuntimeConfig {
        shards: cfg.shards,
        cpus: cfg.cpus.clone(),
        pin: cfg.pin,
        io_memory: 1 << 20,
        mailbox_capacity: 1024,
        instance: cfg.instance_id.clone(),
    };
    if cfg.max_memory > 0 {
        sample_memory(cfg.clone())?;
    }
    if let Some(j) = cfg.verifier.as_ref().and_then(|v| v.jwks()) {
        crate::metrics::register_jwks(j.clone(), &cfg.instance_id);
    }
    let cluster = match &cfg.redis {
        Some(link) => {
            let c = crate::cluster::Cluster::start(link.clone(), cfg.shards)?;
            crate::metrics::register_cluster(c.stats.clone(), &cfg.instance_id);
            Some(Arc::new(c))
        }
        None => None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let shard_cfg = cfg.clone();
    let shard_cluster = cluster.clone();
    let handles = shards::start(rt, move |shard| {
        let cfg = shard_cfg.clone();
        let tx = tx.clone();
        let cluster = shard_cluster.clone();
        async move { run_shard(shard, cfg, addr, tx, cluster).await }
    })?;
    for _ in 0..cfg.shards {
        rx.recv()
            .map_err(|_| std::io::Error::other("a shard failed to start"))??;
    }
    drop(probe);
    Ok(Running {
        addr,
        handles,
        cfg,
        cluster,
    })
}

/// Samples the process's resident memory every 100 ms (for `--max-memory`)
/// on a thread of its own: reading `/proc` is a system call no shard makes.
fn sample_memory(cfg: Arc<Config>) -> std::io::Result<()> {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let read = move || -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page)
    };
    if let Some(rss) = read() {
        cfg.resident
            .store(rss, std::sync::atomic::Ordering::Relaxed);
    }
    std::thread::Builder::new()
        .name("memory".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if let Some(rss) = read() {
                cfg.resident
                    .store(rss, std::sync::atomic::Ordering::Relaxed);
            }
        })?;
    Ok(())
}
