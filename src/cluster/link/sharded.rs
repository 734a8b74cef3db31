//! Sharded subscriptions on a Redis Cluster: one RESP3 subscription
//! connection per primary, each shard channel `SSUBSCRIBE`d on the primary
//! that owns its slot, and moved when the slot moves.
//!
//! Every subscription connection hands its pushes to one channel, tagged
//! with the connection's id, so the link tells a message from a node that
//! dropped a channel (a slot migrated away: the server sends `sunsubscribe`
//! by itself) or went away (a primary that failed).

use std::collections::{BTreeMap, HashMap, HashSet};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::mpsc::UnboundedSender;

use super::nodes::{open_sub, slot, Router};

/// What a push from a subscription connection means to the link.
pub enum Push {
    Message(redis::Msg),
    /// The server dropped this channel's subscription (its slot moved).
    Lost(String),
    /// The connection to this node closed.
    Down(String),
    Nothing,
}

pub struct ShardSubs {
    tx: UnboundedSender<(u64, PushInfo)>,
    next_id: u64,
    /// Node address → (connection id, subscription connection).
    conns: HashMap<String, (u64, MultiplexedConnection)>,
    /// Subscribed shard channel → the node it is subscribed on.
    at: HashMap<String, String>,
    /// Classic channels (which the cluster carries to every node) → the
    /// node they are subscribed on.
    classic: HashMap<String, String>,
}

impl ShardSubs {
    pub fn new(tx: UnboundedSender<(u64, PushInfo)>, first_id: u64) -> ShardSubs {
        ShardSubs {
            tx,
            next_id: first_id,
            conns: HashMap::new(),
            at: HashMap::new(),
            classic: HashMap::new(),
        }
    }

    /// The id the next connection gets (ids stay unique across reconnects,
    /// so pushes of a dropped connection are recognised and ignored).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    async fn conn(
        &mut self,
        router: &Router,
        addr: &str,
    ) -> redis::RedisResult<MultiplexedConnection> {
        if let Some((_, c)) = self.conns.get(addr) {
            return Ok(c.clone());
        }
        let id = self.next_id;
        self.next_id += 1;
        let tx = self.tx.clone();
        let push = move |info: PushInfo| tx.send((id, info));
        let c = open_sub(router.info_for(addr)?, push).await?;
        self.conns.insert(addr.to_string(), (id, c.clone()));
        Ok(c)
    }

    /// SSUBSCRIBEs `names`, each on its slot's primary, one pipeline per
    /// node; a node that answers `MOVED` gets the map read again and the
    /// rest retried once.
    pub async fn subscribe(&mut self, router: &Router, names: &[String]) -> redis::RedisResult<()> {
        let mut todo: Vec<String> = names.to_vec();
        for attempt in 0..2 {
            let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for n in todo.drain(..) {
                let owner = router.owner(slot(n.as_bytes())).unwrap_or_default();
                by_node.entry(owner).or_default().push(n);
            }
            let mut failed = None;
            for (addr, names) in by_node {
                let mut c = self.conn(router, &addr).await?;
                let mut p = redis::pipe();
                for n in &names {
                    p.cmd("SSUBSCRIBE").arg(n).ignore();
                }
                match p.query_async::<()>(&mut c).await {
                    Ok(()) => {
                        for n in names {
                            self.at.insert(n, addr.clone());
                        }
                    }
                    Err(e) if attempt == 0 && e.kind() == redis::ErrorKind::Moved => {
                        todo.extend(names);
                        failed = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            match failed {
                None => return Ok(()),
                Some(_) => {
                    router.refresh().await?;
                }
            }
        }
        Ok(())
    }

    /// SUBSCRIBEs (classic) `name` on one primary, or UNSUBSCRIBEs it.
    pub async fn classic(
        &mut self,
        router: &Router,
        name: &str,
        on: bool,
    ) -> redis::RedisResult<()> {
        if !on {
            if let Some(addr) = self.classic.remove(name) {
                if let Some((_, c)) = self.conns.get(&addr) {
                    let mut c = c.clone();
                    redis::cmd("UNSUBSCRIBE")
                        .arg(name)
                        .exec_async(&mut c)
                        .await?;
                }
            }
            return Ok(());
        }
        if self.classic.contains_key(name) {
            return Ok(());
        }
        let addr = router.primaries().first().cloned().unwrap_or_default();
        let mut c = self.conn(router, &addr).await?;
        redis::cmd("SUBSCRIBE").arg(name).exec_async(&mut c).await?;
        self.classic.insert(name.to_string(), addr);
        Ok(())
    }

    /// SUNSUBSCRIBEs `names` on the nodes they are subscribed on.
    pub async fn unsubscribe(&mut self, names: &[String]) -> redis::RedisResult<()> {
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in names {
            if let Some(addr) = self.at.remove(n) {
                by_node.entry(addr).or_default().push(n.clone());
            }
        }
        for (addr, names) in by_node {
            let Some((_, c)) = self.conns.get(&addr) else {
                continue;
            };
            let mut c = c.clone();
            let mut p = redis::pipe();
            for n in &names {
                p.cmd("SUNSUBSCRIBE").arg(n).ignore();
            }
            p.query_async::<()>(&mut c).await?;
        }
        Ok(())
    }

    /// After the slot map changed (or the server dropped some channels):
    /// subscribes again, on its new primary, every channel whose slot moved
    /// or that was `lost`, and closes connections to nodes that are no
    /// longer primaries. Returns the channels that moved.
    pub async fn rehome(
        &mut self,
        router: &Router,
        lost: &HashSet<String>,
    ) -> redis::RedisResult<Vec<String>> {
        let primaries = router.primaries();
        let moved: Vec<String> = self
            .at
            .iter()
            .filter(|(n, addr)| {
                lost.contains(*n)
                    || router.owner(slot(n.as_bytes())).as_deref() != Some(addr.as_str())
            })
            .map(|(n, _)| n.clone())
            .collect();
        let gone: Vec<String> = self
            .conns
            .keys()
            .filter(|a| !primaries.contains(a))
            .cloned()
            .collect();
        for a in gone {
            self.conns.remove(&a);
        }
        let orphans: Vec<String> = self
            .classic
            .iter()
            .filter(|(_, a)| !primaries.contains(a))
            .map(|(n, _)| n.clone())
            .collect();
        for n in orphans {
            self.classic.remove(&n);
            self.classic(router, &n, true).await?;
        }
        // A node that still holds the old subscription (the slot left it)
        // is told to drop it; one that is gone has dropped it already.
        let _ = self.unsubscribe(&moved).await;
        self.subscribe(router, &moved).await?;
        Ok(moved)
    }

    pub fn on_push(&mut self, id: u64, info: PushInfo) -> Push {
        let Some(addr) = self
            .conns
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(a, _)| a.clone())
        else {
            // A connection dropped since.
            return Push::Nothing;
        };
        match info.kind {
            PushKind::SMessage | PushKind::Message => {
                redis::Msg::from_push_info(info).map_or(Push::Nothing, Push::Message)
            }
            PushKind::SUnsubscribe => {
                let name = match info.data.first() {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => return Push::Nothing,
                };
                // Ours (it is no longer listed here) or the server's.
                if self.at.get(&name) == Some(&addr) {
                    Push::Lost(name)
                } else {
                    Push::Nothing
                }
            }
            PushKind::Disconnection => {
                self.conns.remove(&addr);
                Push::Down(addr)
            }
            _ => Push::Nothing,
        }
    }
}
