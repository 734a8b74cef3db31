//! Session deadlines in 8 bytes instead of an `Instant`'s 16: every
//! session holds three of them.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What the stored nanoseconds count from (the first use in the process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from the epoch, signed (an instant taken before the epoch
/// was fixed is below it): exact both ways for ±292 years.
fn nanos(t: Instant) -> i64 {
    let e = epoch();
    match t.checked_duration_since(e) {
        Some(d) => d.as_nanos() as i64,
        None => -(e.duration_since(t).as_nanos() as i64),
    }
}

fn instant(n: i64) -> Instant {
    let e = epoch();
    if n >= 0 {
        e + Duration::from_nanos(n as u64)
    } else {
        e - Duration::from_nanos(n.unsigned_abs())
    }
}

/// A `Cell<Instant>`.
pub struct InstantCell(Cell<i64>);

impl InstantCell {
    pub fn new(t: Instant) -> Self {
        InstantCell(Cell::new(nanos(t)))
    }

    pub fn get(&self) -> Instant {
        instant(self.0.get())
    }

    pub fn set(&self, t: Instant) {
        self.0.set(nanos(t));
    }
}

/// None: no instant is this far from the epoch.
const NONE: i64 = i64::MIN;

/// A `Cell<Option<Instant>>`.
pub struct OptionInstantCell(Cell<i64>);

impl OptionInstantCell {
    pub fn new(t: Option<Instant>) -> Self {
        OptionInstantCell(Cell::new(t.map_or(NONE, nanos)))
    }

    pub fn get(&self) -> Option<Instant> {
        let n = self.0.get();
        (n != NONE).then(|| instant(n))
    }

    pub fn set(&self, t: Option<Instant>) {
        self.0.set(t.map_or(NONE, nanos));
    }

    pub fn take(&self) -> Option<Instant> {
        let t = self.get();
        self.0.set(NONE);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        let now = Instant::now();
        for t in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(86_400 * 365),
            now - Duration::from_millis(3),
        ] {
            assert_eq!(InstantCell::new(t).get(), t);
            let c = OptionInstantCell::new(Some(t));
            assert_eq!(c.take(), Some(t));
            assert_eq!(c.get(), None);
        }
        assert_eq!(OptionInstantCell::new(None).get(), None);
    }
}
