//! The runtime of a `serve` process: starts every loop (the worker's turns, its lease
//! heartbeat and maintenance, notify deliveries, automation rules, the usage and audit
//! scheduler, the secret key's and the clock's followers) and owns their shutdown, so that one type says how the process stops.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;
use crate::Engine;

/// The running loops of one process; dropping the handle does not stop them,
/// [`WorkerHandle::shutdown`] does.
pub struct WorkerHandle {
    stop: Stopper,
    tasks: JoinSet<()>,
}

/// Begins a process's stop from anywhere (a signal handler), while another task waits in
/// [`WorkerHandle::shutdown`].
#[derive(Clone)]
pub struct Stopper {
    engine: Arc<Engine>,
    stop: Arc<watch::Sender<bool>>,
}

impl Stopper {
    /// Stops claiming at once and starts the drain: jobs still running keep their leases
    /// until they finish or `jobs.drain` passes, then the rest are handed back.
    pub fn stop(&self) {
        self.engine.begin_drain();
        let _ = self.stop.send(true);
    }
}

impl WorkerHandle {
    pub fn stopper(&self) -> Stopper {
        self.stop.clone()
    }

    /// Stops (see [`Stopper::stop`]) and waits until every loop has ended: outcomes of the
    /// jobs that finished are written, the others handed back to the queue.
    pub async fn shutdown(mut self) {
        self.stop.stop();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts every loop over `engine`; `owner` names this process in job and delivery leases.
pub fn spawn(engine: Arc<Engine>, owner: String) -> WorkerHandle {
    let (stop, rx) = watch::channel(false);
    let shutdown = Shutdown::new(rx);
    let mut tasks = JoinSet::new();
    let shared_engine = engine.clone();
    crate::jobs::worker::start(&mut tasks, engine.clone(), owner.clone(), &shutdown);
    tasks.spawn(crate::hooks::deliver::delivery_loop(
        engine.clone(),
        owner,
        shutdown.clone(),
    ));
    tasks.spawn(crate::hooks::rules::rule_loop(
        engine.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::secret_keys::follow_loop(
        engine.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::clock::clock_loop(engine.clone(), shutdown.clone()));
    tasks.spawn(provisio_store::acting(
        provisio_core::access::Actor::Scheduler,
        crate::usage::schedule_loop(engine, shutdown),
    ));
    WorkerHandle {
        stop: Stopper {
            engine: shared_engine,
            stop: Arc::new(stop),
        },
        tasks,
    }
}
