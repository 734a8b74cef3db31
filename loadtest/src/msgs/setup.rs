//! Everything before the measured window of one message-run process: which connections it
//! opens ([`plan`]: its share of the subscribers, publishers or pairs), opening them all and
//! waiting until each has connected and joined ([`connect_all`]), introducing the two sides
//! of each direct pair ([`pair_peers`]), counting the subscribers that made it
//! ([`count_subscribers`]) and, with `--max`, the delivery window that follows from them
//! ([`limit_deliveries`]); then, when one of several processes, the start barrier
//! ([`barrier`]).

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::machine::{Run, GO_TOKEN};
use super::measure::MAX_CHURN_INFLIGHT;
use super::options::{Options, Scenario};
use super::slot::{Role, Slot, Spec};
use crate::sys::raise_nofile;
use crate::target::Target;

/// What one process opens, and where.
pub(super) struct Plan {
    pub(super) targets: Vec<Target>,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) specs: Vec<Spec>,
    /// Connections the specs open.
    pub(super) nconns: u64,
}

/// Checks the options and lists this process's connections: subscriber `s` goes to process
/// `s % count` (publishers all to the first), pair `k` to process `k % count`.
pub(super) fn plan(o: &Options) -> Result<Plan, String> {
    if o.urls.is_empty() {
        return Err("no --url".into());
    }
    let targets: Vec<Target> = o
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<SocketAddr> = targets
        .iter()
        .map(|t| t.resolve())
        .collect::<Result<_, _>>()?;
    let (ci, cn) = o.child.unwrap_or((0, 1));
    if o.scenario == Scenario::Fanout && o.channels == 0 {
        return Err("--channels must be at least 1".into());
    }
    if let Some(r) = o.rate {
        if r <= 0.0 {
            return Err("--rate must be positive".into());
        }
    }
    let mut specs = Vec::new();
    match o.scenario {
        Scenario::Fanout => {
            for s in (0..o.subscribers).filter(|s| s % cn == ci) {
                specs.push(Spec::Sub {
                    channel: s % o.channels,
                    url: s as usize % addrs.len(),
                });
            }
            if ci == 0 {
                for p in 0..o.publishers {
                    specs.push(Spec::Pub { p });
                }
            }
        }
        Scenario::Direct => {
            for k in (0..o.pairs).filter(|k| k % cn == ci) {
                specs.push(Spec::Pair { k });
            }
        }
    }
    let nconns = specs.len() as u64
        + if o.scenario == Scenario::Direct {
            specs.len() as u64
        } else {
            0
        };
    let limit = raise_nofile();
    let churn = if o.churn_rate > 0.0 {
        MAX_CHURN_INFLIGHT
    } else {
        0
    };
    if nconns + 64 + churn > limit {
        return Err(format!(
            "{nconns} connections (plus churn) need more open files than this process may have ({limit}); use --processes"
        ));
    }
    Ok(Plan {
        targets,
        addrs,
        specs,
        nconns,
    })
}

/// Opens every spec, at most `--max-inflight` unready at once, and serves events until all
/// are ready or failed; whatever is not ready `--setup-timeout` after `t_setup` fails.
pub(super) fn connect_all(
    run: &mut Run,
    specs: &[Spec],
    events: &mut [libc::epoll_event],
    t_setup: Instant,
) {
    let o = run.o;
    let setup_deadline = t_setup + Duration::from_secs_f64(o.setup_timeout);
    let mut next_spec = 0;
    let mut last_progress = Instant::now();
    while next_spec < specs.len() || run.pending_setup > 0 {
        while next_spec < specs.len() && run.pending_setup < o.max_inflight {
            open_spec(run, &specs[next_spec]);
            next_spec += 1;
        }
        run.poll(events, 20);
        if Instant::now() > setup_deadline {
            // Fail whatever is still not ready.
            for i in 0..run.slots.len() {
                if run.slots[i].as_ref().is_some_and(|s| !s.ready) {
                    let s = run.slots[i].take().unwrap();
                    run.close_slot(i, s, "setup timeout");
                }
            }
            break;
        }
        if !o.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[setup {:5.1}s] opened {}/{} ready {} failed {}",
                t_setup.elapsed().as_secs_f64(),
                next_spec,
                specs.len(),
                run.ready_count(),
                run.r.conn_failed
            );
        }
    }
}

/// Opens one spec's connection(s); a pair whose other side fails is closed, since one side
/// alone has no one to send to.
fn open_spec(run: &mut Run, spec: &Spec) {
    let nurls = run.addrs.len();
    let p = run.o.publishers.max(1) as usize;
    match *spec {
        Spec::Sub { channel, url } => {
            if run
                .open(url, Role::Subscriber { channel }, p, false)
                .is_some()
            {
                run.pending_setup += 1;
            }
        }
        Spec::Pub { p } => {
            if run.open(0, Role::Publisher { p }, 0, true).is_some() {
                run.pending_setup += 1;
            }
        }
        Spec::Pair { k } => {
            let a = run.open(
                0,
                Role::Peer {
                    id: 2 * k,
                    partner: usize::MAX,
                    to: String::new(),
                },
                1,
                true,
            );
            let b = run.open(
                (k as usize) % nurls,
                Role::Peer {
                    id: 2 * k + 1,
                    partner: a.unwrap_or(usize::MAX),
                    to: String::new(),
                },
                1,
                true,
            );
            if let (Some(a), Some(b)) = (a, b) {
                if let Some(Slot {
                    role: Role::Peer { partner, .. },
                    ..
                }) = run.slots[a].as_mut()
                {
                    *partner = b;
                }
                run.pending_setup += 2;
            } else {
                // A pair with one side missing is useless: close the other one.
                for i in [a, b].into_iter().flatten() {
                    run.slots[i] = None;
                    run.free.push(i);
                    run.fail("partner failed to connect");
                }
            }
        }
    }
}

/// Each side of a pair learns the other's sid; a side whose partner is gone does not send.
pub(super) fn pair_peers(run: &mut Run) {
    for i in 0..run.slots.len() {
        let partner = match run.slots[i].as_ref().map(|s| &s.role) {
            Some(Role::Peer { partner, .. }) => *partner,
            _ => continue,
        };
        if partner != usize::MAX {
            let sid = run.slots[partner].as_ref().and_then(|s| s.conn.sid.clone());
            let a_sid = run.slots[i].as_ref().and_then(|s| s.conn.sid.clone());
            for (me, other_sid) in [(i, sid), (partner, a_sid)] {
                if let Some(Slot {
                    role:
                        Role::Peer {
                            to, partner: pp, ..
                        },
                    ready,
                    ..
                }) = run.slots[me].as_mut()
                {
                    match other_sid {
                        Some(s) => *to = s,
                        None => *ready = false,
                    }
                    if me == partner {
                        *pp = i;
                    }
                }
            }
        }
    }
}

/// Ready subscribers per channel: what the loss count expects each publish to reach.
pub(super) fn count_subscribers(run: &mut Run) {
    let channels = run.o.channels as usize;
    for slot in run.slots.iter().flatten() {
        if let (Role::Subscriber { channel }, true) = (&slot.role, slot.ready) {
            if run.r.subs_per_channel.len() < channels {
                run.r.subs_per_channel.resize(channels, 0);
            }
            run.r.subs_per_channel[*channel as usize] += 1;
        }
    }
    run.local_subs = run.r.subs_per_channel.clone();
}

/// `--max`: how many deliveries to this process's receivers may be outstanding before its
/// senders wait (`--delivery-window` messages per sender, times their recipients here).
pub(super) fn limit_deliveries(run: &mut Run) {
    let o = run.o;
    if o.rate.is_some() {
        return;
    }
    let senders = run
        .slots
        .iter()
        .flatten()
        .filter(|s| s.sender.is_some() && s.ready)
        .count() as u64;
    let per_msg = match o.scenario {
        Scenario::Fanout => {
            let subs: u64 = run.local_subs.iter().sum();
            subs.div_ceil(o.channels.max(1)).max(1)
        }
        Scenario::Direct => 1,
    };
    run.delivery_limit = match o.delivery_window {
        0 => u64::MAX,
        d => d * per_msg * senders.max(1),
    };
    run.r.delivery_limit = (run.delivery_limit != u64::MAX).then_some(run.delivery_limit);
}

/// One of several processes: says `READY` on stdout, then serves events until the parent's
/// `GO <t0>` line (or the end of stdin) arrives.
pub(super) fn barrier(run: &mut Run, events: &mut [libc::epoll_event]) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: GO_TOKEN,
    };
    unsafe { libc::epoll_ctl(run.epfd, libc::EPOLL_CTL_ADD, 0, &mut ev) };
    println!("READY");
    let _ = io::stdout().flush();
    while !run.poll(events, 100) {}
    unsafe { libc::epoll_ctl(run.epfd, libc::EPOLL_CTL_DEL, 0, std::ptr::null_mut()) };
}
