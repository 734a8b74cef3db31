//! One connection of a message run and the part it plays: a [`Slot`] holds the client
//! connection, its [`Role`] (subscriber, publisher, direct peer, churner), the sequence-number
//! streams it receives and, for a sender, its [`Sender`] state. A [`Spec`] is a connection
//! (or, for direct, a pair) the setup still has to open.

use crate::client::Conn;
use crate::seqs::Stream;

pub(super) enum Role {
    Subscriber {
        channel: u64,
    },
    /// Fanout publisher `p` (global index).
    Publisher {
        p: u64,
    },
    /// Direct peer with sender id `id` (pair k: ids 2k and 2k+1); `to` is the partner's sid.
    Peer {
        id: u64,
        partner: usize,
        to: String,
    },
    /// Connect → join → leave → disconnect; stage 1: join sent, 2: leave sent.
    Churner {
        stage: u8,
        channel: u64,
    },
}

pub(super) struct Sender {
    /// Rate mode: next scheduled send, ns (monotonic).
    pub(super) next_due: u64,
    pub(super) outstanding: u64,
    /// Per target (channel for fanout, one for direct): count sent = next sequence number.
    pub(super) seqs: Vec<u64>,
    pub(super) k: u64,
}

pub(super) struct Slot {
    pub(super) conn: Conn,
    pub(super) url: usize,
    pub(super) role: Role,
    pub(super) up: bool,
    pub(super) ready: bool,
    pub(super) next_ack: u64,
    pub(super) streams: Vec<Stream>,
    pub(super) sender: Option<Sender>,
    /// Got a delivery stamped at or after the measured window's end.
    pub(super) past_window: bool,
    /// Got a large channel's presence `count`.
    pub(super) got_count: bool,
}

pub(super) enum Spec {
    Sub { channel: u64, url: usize },
    Pub { p: u64 },
    Pair { k: u64 },
}

impl Slot {
    /// A connection just opened to url `url`, receiving `nstreams` streams; a sender keeps a
    /// sequence number per channel (publisher, of `channels`) or one (peer).
    pub(super) fn new(
        conn: Conn,
        url: usize,
        role: Role,
        nstreams: usize,
        sender: bool,
        channels: u64,
    ) -> Slot {
        let nseq = match &role {
            Role::Publisher { .. } => channels as usize,
            _ => 1,
        };
        Slot {
            conn,
            url,
            role,
            up: false,
            ready: false,
            next_ack: 1,
            streams: vec![Stream::default(); nstreams],
            past_window: false,
            got_count: false,
            sender: sender.then(|| Sender {
                next_due: 0,
                outstanding: 0,
                seqs: vec![0; nseq],
                k: 0,
            }),
        }
    }

    /// The channel index of the message just queued by a publisher (its `k` was incremented).
    pub(super) fn k_before(&self) -> u64 {
        match (&self.role, &self.sender) {
            (Role::Publisher { p }, Some(s)) => p + s.k - 1,
            _ => 0,
        }
    }
}
