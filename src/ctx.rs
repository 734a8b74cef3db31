//! The per-shard services every layer above the runtime shares: the shard
//! (channels, members, the cross-shard mailbox), the validated config, the
//! shard's metrics children, the link to other instances, and the websocket
//! bookkeeping. One `ShardCtx` per shard, built by the edge at startup.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use shards::Shard;

use crate::config::Config;
use crate::metrics::Metrics;

/// One shard's services.
pub struct ShardCtx {
    pub shard: Rc<Shard>,
    pub cfg: Arc<Config>,
    pub metrics: Metrics,
    /// The link to other instances (with `--redis-url`).
    pub cluster: Option<Rc<crate::cluster::ClusterLink>>,
    /// Websocket tasks still running (a graceful stop waits for them).
    pub live_websockets: Cell<usize>,
    /// Scratch for a websocket task's batch of packets (borrowed only
    /// between two awaits), so sockets keep no batch storage of their own.
    pub ws_batch: RefCell<Vec<proto::engineio::Outgoing>>,
    /// What every websocket of the shard reads into (`--ws-read-buffer`
    /// bytes, borrowed only within one poll): a socket keeps bytes of its
    /// own only for a frame not yet whole.
    pub ws_read: RefCell<Box<[u8]>>,
    /// The batch's compressed frames, for sockets with permessage-deflate.
    pub ws_deflated: RefCell<(Vec<proto::engineio::Outgoing>, Vec<bool>)>,
    /// The shard's direct-write sink, lent to every idle websocket's outbox
    /// (made on first use: it refers back to this context).
    pub ws_sink: std::cell::OnceCell<Rc<dyn shards::DirectSink>>,
    /// What direct writes left unwritten, by socket fd, for the socket's
    /// task to write before anything else.
    pub ws_rests: RefCell<std::collections::HashMap<std::os::fd::RawFd, Vec<u8>>>,
    /// The shard's compressor and its cache of compressed shared frames.
    pub deflater: RefCell<crate::engine::transport::deflate::Deflater>,
    /// Large channels whose home is this shard and whose member count
    /// changed since their last presence `count` (`app/counts.rs`); true:
    /// changed on this instance.
    pub presence_counts: RefCell<std::collections::HashMap<Arc<str>, bool>>,
}
