//! What a recovering socket carries between its CONNECT and its replay,
//! and what it keeps of a replay given from elsewhere: plain data, read by
//! the socket (`app/socket.rs`) and the recovery steps.

use std::collections::HashSet;

use shards::Replay;

/// What a recovered socket is given once its CONNECT is answered.
pub struct Pending {
    /// Frames handed over by the shard it was held on.
    pub(super) replay: Replay,
    pub(super) local: Local,
    /// Its presence grace had ended: `join` again.
    pub(super) rejoin: bool,
}

/// Frames a socket was given from elsewhere when it came to this shard,
/// and this shard's log position then.
pub struct Carry {
    pub(super) frames: Replay,
    pub(super) from: u64,
}

pub enum Local {
    /// Held here: this shard's log after the offset (or since its start).
    After { offset: Option<String> },
    /// Handed over: this shard's log from where it joined its channels
    /// here, except what the other shard already gave.
    Since { from: u64, skip: HashSet<String> },
}
