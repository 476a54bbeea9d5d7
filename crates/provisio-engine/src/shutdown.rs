//! The stop signal of a process's loops: a leaf that every loop imports and that
//! `runtime` (which starts the loops) sends.

use std::time::Duration;

use tokio::sync::watch;

/// What every loop watches to learn that the process is stopping. Each loop holds its
/// own clone.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Self(rx)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub(crate) async fn stopped(&mut self) {
        // An error means the runtime is gone, which is a stop as well.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// Sleeps for `d` unless shutdown begins first; says whether it did.
    pub(crate) async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stopped() => true,
        }
    }
}
