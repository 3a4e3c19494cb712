//! Log lines about refusals, a few a second at most: a flood of refused requests must not
//! become a flood of log lines (a disk filled for an attacker), yet none goes unreported, as
//! the next line written says how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogThrottle {
    per_second: u32,
    state: Mutex<State>,
}

struct State {
    /// When the current second started.
    since: Option<Instant>,
    /// Lines written in it.
    written: u32,
    /// Lines left out since the last one written.
    left_out: u64,
}

impl LogThrottle {
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Mutex::new(State {
                since: None,
                written: 0,
                left_out: 0,
            }),
        }
    }

    /// Whether a line may be written now: `Some(n)`, with the `n` lines left out since the
    /// last one written; `None`: leave this one out.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .since
            .is_none_or(|since| now.duration_since(since) >= Duration::from_secs(1))
        {
            state.since = Some(now);
            state.written = 0;
        }
        if state.written < self.per_second {
            state.written += 1;
            return Some(std::mem::take(&mut state.left_out));
        }
        state.left_out += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_rate_are_counted_in_the_next_one() {
        let throttle = LogThrottle::new(2);
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        throttle.state.lock().unwrap().since = Some(Instant::now() - Duration::from_secs(1));
        assert_eq!(throttle.admit(), Some(2));
        assert_eq!(throttle.admit(), Some(0));
    }
}
