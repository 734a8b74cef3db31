//! Starts the shards: one glommio executor per shard, pinned to a CPU unless
//! told otherwise, wired into a full mesh of bounded mailboxes.
//!
//! Everything glommio-specific that the rest of the program needs is
//! re-exported from [`crate::rt`], so the runtime can be swapped in one crate.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::StreamExt;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::ids::MAX_SHARDS;
use crate::mailbox::{Mailbox, ShardMsg};
use crate::shard::Shard;

/// Where and how the shards run.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub shards: usize,
    /// CPUs to pin to, one per shard (round-robin if fewer); `None` = 0..shards.
    pub cpus: Option<Vec<usize>>,
    pub pin: bool,
    /// glommio's DMA buffer arena per shard; small, since this is a network
    /// service that does no file I/O.
    pub io_memory: usize,
    pub mailbox_capacity: usize,
    pub instance: Arc<str>,
}

/// Spawns the shards; each runs `main(shard)` after joining the mesh. The
/// returned handles finish when `main` returns.
pub fn start<F, Fut>(cfg: RuntimeConfig, main: F) -> std::io::Result<Vec<ShardHandle>>
where
    F: Fn(Rc<Shard>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let n = cfg.shards.clamp(1, MAX_SHARDS);
    let mesh = MeshBuilder::<ShardMsg, _>::full(n, cfg.mailbox_capacity.max(16));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let placement = if cfg.pin {
            let cpus = cfg.cpus.clone().unwrap_or_else(|| (0..n).collect());
            Placement::Fixed(cpus[i % cpus.len().max(1)])
        } else {
            Placement::Unbound
        };
        let mesh = mesh.clone();
        let main = main.clone();
        let instance = cfg.instance.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(cfg.io_memory)
            .spawn(move || async move {
                let (senders, mut receivers) = match mesh.join().await {
                    Ok(x) => x,
                    Err(_) => return,
                };
                let id = senders.peer_id();
                let shard = Rc::new(Shard::new(id, n, instance, Mailbox::new(senders)));
                for (_, mut rx) in receivers.streams() {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        while let Some(msg) = rx.next().await {
                            shard.handle(msg);
                        }
                    })
                    .detach();
                }
                main(shard).await;
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        handles.push(ShardHandle(h));
    }
    Ok(handles)
}

/// A running shard; [`ShardHandle::join`] waits for its `main` to return.
pub struct ShardHandle(glommio::ExecutorJoinHandle<()>);

impl ShardHandle {
    pub fn join(self) -> std::io::Result<()> {
        self.0
            .join()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
