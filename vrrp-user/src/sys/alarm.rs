//! One timer for the daemon's event loop, on a timerfd: it wakes the loop exactly once at the
//! time asked for. (tokio's timer wheel wakes its thread early for a timer more than 64 ms
//! away, to move it to a finer level; at 100 ms adverts that doubled the idle wake-ups.)

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    time::{Duration, Instant},
};

use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::unix::AsyncFd;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct Alarm {
    fd: AsyncFd<Fd>,
    armed: Option<Instant>,
}

impl Alarm {
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the timerfd is owned by the value registered and lives as long as it does.
        let fd = unsafe { AsyncFd::register(Fd(fd)) }?;
        Ok(Self { fd, armed: None })
    }

    /// Sets the alarm for `at` (one shot), unless it is already set for then.
    pub fn set(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // A zero time would disarm the timer: a time already past fires after 1 µs.
        let after = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        self.fd.get_ref().0.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        )?;
        self.armed = Some(at);
        Ok(())
    }

    /// Waits until the alarm goes off.
    pub async fn fired(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(result) => {
                    // One read drains a timerfd: it is not readable again until it fires
                    // again (a new edge), so the next wait need not read it to learn that.
                    guard.clear_ready();
                    self.armed = None;
                    return result;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_fires_once_at_the_time_set_and_can_be_moved() {
        let mut alarm = Alarm::new().unwrap();
        let start = Instant::now();
        alarm.set(start + Duration::from_millis(200)).unwrap();
        // Moved earlier: the earlier time wins.
        alarm.set(start + Duration::from_millis(30)).unwrap();
        alarm.fired().await.unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(30) && took < Duration::from_millis(150),
            "{took:?}"
        );
        // A time already past fires at once.
        alarm.set(start).unwrap();
        tokio::time::timeout(Duration::from_secs(1), alarm.fired())
            .await
            .expect("fires")
            .unwrap();
    }
}
