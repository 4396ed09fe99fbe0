//! A timer that is set again and again without registering anew each time.
//!
//! A keep-alive connection has a deadline for every request: the bot connection for its
//! head and body, the upstream connection for the webhook's timeout. A tokio `Sleep` per
//! request registers and removes a timer entry each time; a [`Deadline`] keeps one `Sleep`
//! for the life of the connection. Moving the deadline later only writes it down, and the
//! timer is set again when it fires early, so the timer of a busy connection fires about
//! once per timeout instead of being touched on every request.

use std::future::Future;
use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// One connection's timer.
#[derive(Debug)]
pub(crate) struct Deadline {
    at: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A timer for `at`.
    pub(crate) fn new(at: Instant) -> Deadline {
        Deadline {
            at,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Moves the deadline to `at` (later or earlier).
    pub(crate) fn set(&mut self, at: Instant) {
        self.at = at;
        if self.timer.deadline() > at {
            self.timer.as_mut().reset(at);
        }
    }

    /// `work`'s output, or `None` if the deadline passes first.
    pub(crate) async fn within<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Some(done),
                () = &mut self.timer => {
                    if Instant::now() >= self.at {
                        return None;
                    }
                    let at = self.at;
                    self.timer.as_mut().reset(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_and_not_before() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(1));
        // Moved later before the first timer fires: the work still has until then.
        deadline.set(start + Duration::from_secs(3));
        let slow = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(deadline.within(slow).await, Some(()));
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        // Past the deadline: cut at 3 s, not at 10.
        let slower = tokio::time::sleep(Duration::from_secs(10));
        assert_eq!(deadline.within(slower).await, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        // Moved earlier: the timer follows.
        deadline.set(Instant::now() + Duration::from_millis(500));
        let late = tokio::time::sleep(Duration::from_secs(1));
        assert_eq!(deadline.within(late).await, None);
        assert_eq!(Instant::now() - start, Duration::from_millis(3500));
    }
}
