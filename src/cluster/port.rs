//! The channel from the Redis shard (`link`) to one shard: a bounded
//! crossbeam channel plus a socketpair byte that wakes the shard's executor
//! when it was idle (a crossbeam receiver alone cannot). The link holds the
//! [`ShardPort`]; the shard takes its [`ShardEnd`] once.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::cluster::msg::FromCluster;

/// One shard's receiving end as the link sees it.
pub struct ShardPort {
    pub tx: crossbeam_channel::Sender<FromCluster>,
    pub armed: Arc<AtomicBool>,
    pub wake: UnixStream,
}

impl ShardPort {
    /// Queues `m` (counted in `dropped` when the shard is that far behind)
    /// and wakes the shard if it is waiting.
    pub fn send(&self, m: FromCluster, dropped: &AtomicU64) {
        if self.tx.try_send(m).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        if self.armed.swap(false, Ordering::AcqRel) {
            let _ = (&self.wake).write(b"w");
        }
    }
}

/// The shard's end of its port, taken once by the shard with that id.
pub struct ShardEnd {
    pub rx: crossbeam_channel::Receiver<FromCluster>,
    pub armed: Arc<AtomicBool>,
    pub wake: UnixStream,
}

/// A new port and its end.
pub fn pair() -> std::io::Result<(ShardPort, ShardEnd)> {
    let (tx, rx) = crossbeam_channel::bounded(16_384);
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    let armed = Arc::new(AtomicBool::new(false));
    let port = ShardPort {
        tx,
        armed: armed.clone(),
        wake: a,
    };
    Ok((port, ShardEnd { rx, armed, wake: b }))
}
