//! Keeps this node's clock on the database's time. The store measures the offset at
//! connect; this loop measures it again, so that a clock that steps later (a time sync's
//! correction, a resumed virtual machine) is caught well within a lease.

use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::Engine;

/// Clocks drift by milliseconds an hour; steps are what this interval is for.
pub const CLOCK_EVERY: Duration = Duration::from_secs(30);

pub(crate) async fn clock_loop(engine: Arc<Engine>, mut stop: Shutdown) {
    let pulse = engine.heartbeats().register("clock", CLOCK_EVERY);
    loop {
        pulse.beat();
        if stop.sleep(CLOCK_EVERY).await {
            return;
        }
        resync(&engine).await;
    }
}

/// One measurement; warns when the offset moved by more than the round trip's noise to
/// more than that noise off.
async fn resync(engine: &Engine) {
    let before = engine.clock().offset();
    match engine.store.sync_clock().await {
        Ok(offset) if (offset - before).abs() > provisio_store::WARN_OFFSET => {
            provisio_store::warn_if_off(offset)
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "measuring the database's clock failed; the last correction stays")
        }
    }
}

/// Keeps the clock of a process that runs no worker (an API-only node, whose requests
/// stamp due times too); the task runs until aborted.
pub fn spawn(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    let (keep, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Held for as long as the loop runs: a dropped sender reads as a stop.
        let _keep = keep;
        clock_loop(engine, Shutdown::new(rx)).await
    })
}
