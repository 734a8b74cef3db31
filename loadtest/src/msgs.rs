//! The message scenarios: `fanout` (with optional churn) and `direct`.
//!
//! One thread, edge-triggered epoll, the minimal client of [`crate::client`]. Subscribers parse
//! every RealtimeEvent they get, record end-to-end latency (publish intended/actual send time →
//! receipt, CLOCK_MONOTONIC, so valid across processes on one machine) and account sequence
//! numbers per (publisher, channel) stream.
//!
//! [`run`] below is one process's run, step by step. The parts, each in its own file:
//!
//! | module         | owns                                                                 |
//! |----------------|----------------------------------------------------------------------|
//! | [`options`]    | what a run is asked to do (scenario, membership, CO correction, …)   |
//! | [`packets`]    | the Socket.IO events sent and the classification of those received  |
//! | `slot`       | one connection and its role (subscriber, publisher, peer, churner)   |
//! | `machine`    | the event machine: slots, epoll, timer, what each event does        |
//! | `setup`      | before the window: plan, connect and join everyone, the barrier      |
//! | `measure`    | the window: start, send, churn, drain, collect the figures           |
//! | [`report`]     | the figures, their merging over processes, the table                 |
//! | [`processes`]  | `--processes N`: spawning the children, `READY`/`GO`, merging        |
//!
//! Dependencies point one way: `setup` → `measure` → `machine` → `slot`, `packets`,
//! `report` → `options`; `processes` → `report`. None of them uses this file.

mod machine;
mod measure;
pub mod options;
pub mod packets;
pub mod processes;
pub mod report;
mod setup;
mod slot;

use std::time::Instant;

pub use options::{CoCorrection, Membership, Options, Scenario};
pub use processes::{new_run_id, run_processes};
pub use report::Report;

/// Runs one process's share of the scenario.
pub fn run(o: &Options) -> Result<Report, String> {
    let plan = setup::plan(o)?;
    let mut run = machine::Run::new(o, &plan.targets, plan.addrs, plan.nconns)?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 4096];

    // Setup: connect everyone, join/subscribe.
    let t_setup = Instant::now();
    setup::connect_all(&mut run, &plan.specs, &mut events, t_setup);
    setup::pair_peers(&mut run);
    run.r.setup_secs = t_setup.elapsed().as_secs_f64();
    run.setup_done = true;
    setup::count_subscribers(&mut run);
    setup::limit_deliveries(&mut run);
    if !o.quiet {
        eprintln!(
            "setup done in {:.2} s: {} ready, {} failed",
            run.r.setup_secs,
            run.ready_count(),
            run.r.conn_failed
        );
    }
    if o.child.is_some() {
        setup::barrier(&mut run, &mut events);
    }

    // The measured window, then the drain.
    let mut window = measure::start(&mut run);
    measure::send_and_drain(&mut run, &mut window, &mut events);
    Ok(measure::collect(&mut run))
}
