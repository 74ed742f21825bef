//! Backoff for accept loops (the client listener in `server`, the admin
//! HTTP listener in `admin`): after `accept` fails, pause, doubling the
//! pause while failures last.

use std::time::Duration;

/// How long an accept loop pauses after `accept` fails. Out of file
/// descriptors (EMFILE/ENFILE) or buffers, `accept` fails at once and keeps
/// failing: retrying at once spins a core and floods the log while the
/// connection waits in the backlog. The pause doubles from 5 ms up to 1 s
/// while failures last and resets after a success, so a brief shortage
/// costs milliseconds and a lasting one costs one try a second.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// Failures in a row.
    failures: u32,
}

impl AcceptBackoff {
    /// First pause.
    const MIN: Duration = Duration::from_millis(5);
    /// Longest pause.
    const MAX: Duration = Duration::from_secs(1);

    /// Records a failed accept; returns how long to pause before the next.
    pub(crate) fn failed(&mut self) -> Duration {
        let pause = Self::MIN.saturating_mul(1u32 << self.failures.min(16)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    /// Records a successful accept.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_caps_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<u128> = (0..12).map(|_| b.failed().as_millis()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.failed(), AcceptBackoff::MAX, "never past the cap, never overflowing");
        }
        b.succeeded();
        assert_eq!(b.failed(), AcceptBackoff::MIN);
    }
}
