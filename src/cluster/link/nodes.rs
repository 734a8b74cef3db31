//! Redis Cluster: the slot map, one command connection per primary, and
//! the routing of every command to the primary that owns its slot.
//!
//! [`Router`] is a `ConnectionLike`, so the link's commands, pipelines and
//! scripts run on it as they do on one server's connection. A pipeline is
//! cut per command, not per node: each command goes to its slot's primary
//! on that node's multiplexed connection (consecutive commands for one node
//! leave in one write, so a batch is still one round trip per node, all
//! nodes at once), and each gets its own answer, so a `MOVED` or `ASK` for
//! one command is followed for that command alone without sending the
//! others twice. A `MOVED` also marks the map stale; the link then reads
//! the map again and moves its subscriptions (see `Link::topology` and
//! `ShardSubs::rehome`).
//! A transaction (MULTI/EXEC) goes whole to the node of its first key: the
//! link only builds transactions within one hash slot.
//!
//! Scripts are loaded on every primary when the router connects to it (a
//! replica promoted by a failover has an empty script cache), and again on
//! `NOSCRIPT`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Arg, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisFuture, Value};

/// Hash slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The hash slot of a key or shard channel: CRC16 (XMODEM) of its hash tag
/// (what is between the first `{` and the next `}`, when not empty) or of
/// the whole key, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The seed nodes of `redis+cluster://[user:pass@]h1:p1,h2:p2[/db]` (or
/// `rediss+cluster://` for TLS; a plain `redis://` URL names one seed).
pub fn parse_seeds(url: &str) -> Result<Vec<ConnectionInfo>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not a Redis URL: {url}"))?;
    let scheme = match scheme {
        "redis+cluster" | "redis" => "redis",
        "rediss+cluster" | "rediss" => "rediss",
        s => return Err(format!("unknown scheme {s}:// for a Redis Cluster")),
    };
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let (hosts, tail) = match hosts.find(['/', '?']) {
        Some(i) => hosts.split_at(i),
        None => (hosts, ""),
    };
    let mut seeds = Vec::new();
    for h in hosts.split(',').filter(|h| !h.is_empty()) {
        let u = format!("{scheme}://{auth}{h}{tail}");
        let info = redis::IntoConnectionInfo::into_connection_info(u.as_str())
            .map_err(|e| format!("{h}: {e}"))?;
        seeds.push(info);
    }
    if seeds.is_empty() {
        return Err(format!("no node in {url}"));
    }
    Ok(seeds)
}

/// `info` with its address replaced by `host:port` (same credentials, TLS).
pub fn at(info: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match &info.addr {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    ConnectionInfo {
        addr,
        redis: info.redis.clone(),
    }
}

/// `host:port` of an address, as `CLUSTER SLOTS` and redirections name it.
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h, p.parse().ok()?))
}

/// Opens a command connection to a node.
pub async fn open(info: ConnectionInfo) -> redis::RedisResult<MultiplexedConnection> {
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&conn_config())
        .await
}

/// Opens a subscription connection to a node: RESP3, so that sharded
/// messages arrive as pushes, handed to `push`.
pub async fn open_sub(
    info: ConnectionInfo,
    push: impl redis::aio::AsyncPushSender,
) -> redis::RedisResult<MultiplexedConnection> {
    let mut info = info;
    info.redis.protocol = redis::ProtocolVersion::RESP3;
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&conn_config().set_push_sender(push))
        .await
}

fn conn_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
}

/// The slot map: for each slot, the index of its primary in `addrs`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    pub addrs: Vec<String>,
    owner: Vec<u16>,
}

impl SlotMap {
    /// From a `CLUSTER SLOTS` answer: `[[from, to, [host, port, id, ...],
    /// replicas...]...]`.
    pub fn parse(v: &Value) -> Option<SlotMap> {
        let Value::Array(ranges) = v else {
            return None;
        };
        let mut m = SlotMap {
            addrs: Vec::new(),
            owner: vec![u16::MAX; SLOTS],
        };
        for r in ranges {
            let Value::Array(f) = r else { continue };
            let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(node))) =
                (f.first(), f.get(1), f.get(2))
            else {
                continue;
            };
            let host = match node.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = node.get(1) else {
                continue;
            };
            let addr = format!("{host}:{port}");
            let idx = match m.addrs.iter().position(|a| *a == addr) {
                Some(i) => i,
                None => {
                    m.addrs.push(addr);
                    m.addrs.len() - 1
                }
            };
            let (from, to) = (
                (*from).clamp(0, SLOTS as i64 - 1),
                (*to).clamp(0, SLOTS as i64 - 1),
            );
            for s in from..=to {
                m.owner[s as usize] = idx as u16;
            }
        }
        (!m.addrs.is_empty()).then_some(m)
    }

    pub fn owner(&self, slot: u16) -> Option<&str> {
        let i = *self.owner.get(slot as usize)?;
        self.addrs.get(i as usize).map(String::as_str)
    }

    fn set(&mut self, slot: u16, addr: &str) {
        let idx = match self.addrs.iter().position(|a| a == addr) {
            Some(i) => i,
            None => {
                self.addrs.push(addr.to_string());
                self.addrs.len() - 1
            }
        };
        if let Some(o) = self.owner.get_mut(slot as usize) {
            *o = idx as u16;
        }
    }
}

struct State {
    map: SlotMap,
    conns: HashMap<String, MultiplexedConnection>,
    /// A redirection was seen since the map was last read.
    stale: bool,
}

/// Commands to a Redis Cluster, each to its slot's primary.
#[derive(Clone)]
pub struct Router {
    template: ConnectionInfo,
    scripts: Arc<Vec<String>>,
    state: Arc<Mutex<State>>,
}

const REDIRECTS: usize = 5;

impl Router {
    /// Reads the slot map from the first seed (or known node) that answers
    /// and connects to every primary.
    pub async fn connect(
        seeds: &[ConnectionInfo],
        scripts: Vec<String>,
    ) -> redis::RedisResult<Router> {
        let template = seeds.first().cloned().ok_or_else(no_node)?;
        let r = Router {
            template,
            scripts: Arc::new(scripts),
            state: Arc::new(Mutex::new(State {
                map: SlotMap::default(),
                conns: HashMap::new(),
                stale: false,
            })),
        };
        let mut last = no_node();
        for seed in seeds {
            match r.read_map_from(seed.clone()).await {
                Ok(map) => {
                    r.adopt(map).await?;
                    return Ok(r);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn read_map_from(&self, info: ConnectionInfo) -> redis::RedisResult<SlotMap> {
        let mut c = open(info).await?;
        read_map(&mut c).await
    }

    /// Reads the slot map again (from any connected node that answers);
    /// true when it changed. New primaries are connected, connections to
    /// nodes that are no longer primaries are dropped.
    pub async fn refresh(&self) -> redis::RedisResult<bool> {
        let conns: Vec<MultiplexedConnection> = self.lock().conns.values().cloned().collect();
        let mut last = no_node();
        for mut c in conns {
            match read_map(&mut c).await {
                Ok(map) => {
                    let changed = self.lock().map != map;
                    self.adopt(map).await?;
                    return Ok(changed);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Installs `map` after connecting to each of its primaries.
    async fn adopt(&self, map: SlotMap) -> redis::RedisResult<()> {
        for addr in &map.addrs {
            self.conn_to(addr).await?;
        }
        let mut s = self.lock();
        s.conns.retain(|a, _| map.addrs.contains(a));
        s.map = map;
        s.stale = false;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a redirection was seen since the map was last read.
    pub fn stale(&self) -> bool {
        self.lock().stale
    }

    /// The primary that owns `slot` in the current map.
    pub fn owner(&self, slot: u16) -> Option<String> {
        self.lock().map.owner(slot).map(str::to_string)
    }

    /// Addresses of the primaries.
    pub fn primaries(&self) -> Vec<String> {
        self.lock().map.addrs.clone()
    }

    /// How to connect to the node at `addr`.
    pub fn info_for(&self, addr: &str) -> redis::RedisResult<ConnectionInfo> {
        let (h, p) = split_addr(addr).ok_or_else(|| bad_addr(addr))?;
        Ok(at(&self.template, h, p))
    }

    /// The command connection to `addr`, opened (and its scripts loaded) if
    /// there is none yet.
    async fn conn_to(&self, addr: &str) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.lock().conns.get(addr) {
            return Ok(c.clone());
        }
        let mut c = open(self.info_for(addr)?).await?;
        self.load_scripts(&mut c).await?;
        self.lock().conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    async fn load_scripts(&self, c: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        for s in self.scripts.iter() {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(s)
                .query_async(c)
                .await?;
        }
        Ok(())
    }

    async fn conn_for(&self, slot: Option<u16>) -> redis::RedisResult<MultiplexedConnection> {
        let addr = {
            let s = self.lock();
            match slot.and_then(|k| s.map.owner(k)) {
                Some(a) => a.to_string(),
                None => s.map.addrs.first().cloned().ok_or_else(no_node)?,
            }
        };
        self.conn_to(&addr).await
    }

    /// One command, to its slot's primary, following redirections.
    async fn exec(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        let mut conn = self.conn_for(cmd_slot(cmd)).await?;
        let mut asking = false;
        let mut tries = 0;
        loop {
            let r = if asking {
                let mut p = redis::pipe();
                p.cmd("ASKING").ignore().add_command(cmd.clone());
                p.query_async::<(Value,)>(&mut conn).await.map(|(v,)| v)
            } else {
                conn.req_packed_command(cmd).await
            };
            let r = r.and_then(Value::extract_error);
            tries += 1;
            let e = match r {
                Err(e) if tries < REDIRECTS => e,
                r => return r,
            };
            asking = false;
            match e.kind() {
                ErrorKind::Moved => {
                    let (addr, slot) = e.redirect_node().ok_or_else(|| bad_addr("MOVED"))?;
                    let addr = addr.to_string();
                    {
                        let mut s = self.lock();
                        s.stale = true;
                        s.map.set(slot, &addr);
                    }
                    conn = self.conn_to(&addr).await?;
                }
                ErrorKind::Ask => {
                    let (addr, _) = e.redirect_node().ok_or_else(|| bad_addr("ASK"))?;
                    conn = self.conn_to(addr).await?;
                    asking = true;
                }
                ErrorKind::TryAgain | ErrorKind::ClusterDown | ErrorKind::MasterDown => {
                    self.lock().stale = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ErrorKind::NoScriptError => self.load_scripts(&mut conn).await?,
                _ => return Err(e),
            }
        }
    }

    /// Every command of a pipeline, each with its own answer.
    pub async fn exec_each(&self, pipe: &redis::Pipeline) -> Vec<redis::RedisResult<Value>> {
        join_all(pipe.cmd_iter().map(|c| self.exec(c))).await
    }

    /// A transaction, whole, to the node of its first key.
    async fn exec_atomic(
        &self,
        pipe: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        let slot = pipe.cmd_iter().find_map(cmd_slot);
        let mut conn = self.conn_for(slot).await?;
        let r = conn.req_packed_commands(pipe, offset, count).await;
        match r {
            Err(e) if e.kind() == ErrorKind::Moved => {
                self.lock().stale = true;
                self.refresh().await?;
                let mut conn = self.conn_for(slot).await?;
                conn.req_packed_commands(pipe, offset, count).await
            }
            r => r,
        }
    }
}

async fn read_map(c: &mut MultiplexedConnection) -> redis::RedisResult<SlotMap> {
    let v: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
    SlotMap::parse(&v).ok_or_else(|| {
        RedisError::from((
            ErrorKind::ClusterDown,
            "CLUSTER SLOTS named no primary (is this a Redis Cluster?)",
        ))
    })
}

impl ConnectionLike for Router {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.exec(cmd).boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            if offset > 0 {
                return self.exec_atomic(pipe, offset, count).await;
            }
            // Every command is sent (and redirected) on its own; as on one
            // server, the pipeline fails with the first error.
            join_all(pipe.cmd_iter().map(|c| self.exec(c)))
                .await
                .into_iter()
                .collect()
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The slot a command is routed by: its first key (scripts: their first
/// declared key; a shard channel counts as a key). `None`: any node.
pub fn cmd_slot(cmd: &Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        Arg::Simple(b) => Some(b),
        Arg::Cursor => None,
    });
    let name = args.next()?;
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("EVALSHA") || is("EVAL") {
        args.next()?;
        let n = args.next()?;
        if n == b"0" {
            return None;
        }
        return args.next().map(slot);
    }
    if is("SCRIPT") || is("CLUSTER") || is("PING") || is("PUBLISH") || is("MULTI") {
        return None;
    }
    args.next().map(slot)
}

fn no_node() -> RedisError {
    RedisError::from((ErrorKind::IoError, "no Redis Cluster node answered"))
}

fn bad_addr(what: &str) -> RedisError {
    RedisError::from((ErrorKind::ClientError, "bad node address", what.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"sgw:h:{chat:1}"), slot(b"sgw:ch:{chat:1}"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn seeds() {
        let s = parse_seeds("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].redis.password.as_deref(), Some("pw"));
        assert!(matches!(&s[1].addr, ConnectionAddr::Tcp(h, 7001) if h == "127.0.0.1"));
        assert_eq!(parse_seeds("redis://h:1").unwrap().len(), 1);
        assert!(parse_seeds("http://h:1").is_err());
        assert!(parse_seeds("redis+cluster://").is_err());
    }

    #[test]
    fn slot_map_from_cluster_slots() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let v = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
            ]),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Int(3),
        ]);
        let m = SlotMap::parse(&v).unwrap();
        assert_eq!(m.owner(0), Some("10.0.0.1:7000"));
        assert_eq!(m.owner(5460), Some("10.0.0.1:7000"));
        assert_eq!(m.owner(5461), Some("10.0.0.2:7001"));
        assert_eq!(m.owner(16383), Some("10.0.0.2:7001"));
        assert_eq!(m.addrs.len(), 2, "replicas are not primaries");
        assert!(SlotMap::parse(&Value::Array(vec![])).is_none());
        assert!(SlotMap::parse(&Value::Nil).is_none());
        let mut partial = SlotMap::parse(&Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(10),
            node("h", 1),
        ])]))
        .unwrap();
        assert_eq!(partial.owner(11), None, "an unassigned slot has no owner");
        partial.set(11, "h2:2");
        assert_eq!(partial.owner(11), Some("h2:2"));
    }

    #[test]
    fn routing_keys() {
        let mut e = redis::cmd("EVALSHA");
        e.arg("sha").arg(1).arg("sgw:h:{c}").arg("x");
        assert_eq!(cmd_slot(&e), Some(slot(b"c")));
        let mut p = redis::cmd("SPUBLISH");
        p.arg("sgw:ch:{c}").arg("x");
        assert_eq!(cmd_slot(&p), Some(slot(b"c")));
        assert_eq!(cmd_slot(redis::cmd("SCRIPT").arg("LOAD").arg("x")), None);
    }
}
