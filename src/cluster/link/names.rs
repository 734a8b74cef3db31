//! Names in Redis shared by the whole link: keys under `<prefix>:`, a
//! channel's topic, an instance's inbox and per-instance keys, and the
//! publish command. On a Redis Cluster they carry hash tags (see
//! `Link::topic`). Names that belong to one concept live with it
//! (`recovery.rs`: streams and socket states; `patterns.rs`: the prefix
//! registry).

use super::Link;

impl Link {
    pub(super) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.cfg.prefix)
    }
    // On a Redis Cluster, names carry a hash tag: a channel's topic shares
    // its slot with the channel's history stream (`h:{<channel>}`), so one
    // script keeps and publishes; all of an instance's presence keys share
    // one slot, so its rewrite stays one MULTI.
    pub(super) fn topic(&self, channel: &str) -> String {
        match self.cfg.cluster {
            true => format!("{}:ch:{{{channel}}}", self.cfg.prefix),
            false => format!("{}:ch:{channel}", self.cfg.prefix),
        }
    }
    pub(super) fn inbox(&self, instance: &str) -> String {
        match self.cfg.cluster {
            true => format!("{}:inbox:{{{instance}}}", self.cfg.prefix),
            false => format!("{}:inbox:{instance}", self.cfg.prefix),
        }
    }
    /// The instance whose inbox `topic` is.
    pub(super) fn inbox_owner<'a>(&self, topic: &'a str) -> &'a str {
        let rest = topic.rsplit(":inbox:").next().unwrap_or_default();
        match self.cfg.cluster {
            true => rest.trim_start_matches('{').trim_end_matches('}'),
            false => rest,
        }
    }
    pub(super) fn inst_key(&self, instance: &str, rest: &str) -> String {
        match self.cfg.cluster {
            true => format!("{}:i:{{{instance}}}:{rest}", self.cfg.prefix),
            false => format!("{}:i:{instance}:{rest}", self.cfg.prefix),
        }
    }
    /// PUBLISH, or SPUBLISH (to the topic's slot) on a cluster.
    pub(super) fn publish_cmd(&self) -> &'static str {
        match self.cfg.cluster {
            true => "SPUBLISH",
            false => "PUBLISH",
        }
    }
}
