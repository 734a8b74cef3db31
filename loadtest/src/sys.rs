//! The few operating-system services the event loops share, wrapped once: the monotonic
//! clock every timestamp is taken from, a one-shot timer an epoll loop can wait on, and the
//! open-files limit a many-connection run has to raise.
//!
//! Timestamps are CLOCK_MONOTONIC nanoseconds (not `Instant`) because they travel: a sender
//! writes one into a message and another process on the same machine subtracts it from its
//! own reading, and the parent of a multi-process run hands its children a common start.

use std::io;
use std::os::fd::RawFd;

/// CLOCK_MONOTONIC now, in nanoseconds; comparable across the processes of one machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A non-blocking CLOCK_MONOTONIC timerfd, closed when dropped. Register [`Timer::fd`] with
/// epoll for `EPOLLIN`; it becomes readable when the time given to [`Timer::arm`] comes.
pub struct Timer {
    fd: RawFd,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Timer { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Fires once at `at_ns` (a [`mono_ns`] time), replacing any earlier setting.
    pub fn arm(&self, at_ns: u64) {
        let ts = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as i64,
                // Zero would disarm it.
                tv_nsec: (at_ns % 1_000_000_000).max(1) as i64,
            },
        };
        unsafe {
            libc::timerfd_settime(self.fd, libc::TFD_TIMER_ABSTIME, &ts, std::ptr::null_mut())
        };
    }

    /// Reads the expiry count so that the (level-triggered) fd stops being readable.
    pub fn clear(&self) {
        let mut b = [0u8; 8];
        unsafe { libc::read(self.fd, b.as_mut_ptr() as *mut libc::c_void, 8) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

/// Raises the soft open-files limit to the hard one; returns the resulting soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return r.rlim_max;
            }
        }
        r.rlim_cur
    }
}
