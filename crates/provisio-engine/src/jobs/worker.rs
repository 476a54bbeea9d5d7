//! The worker: claims due jobs, runs them through their module, and writes each outcome with
//! its attempt record and service change in batched transactions. It also renews its
//! leases, returns jobs of dead workers to the queue, and unsuspends services whose
//! suspension has run out.
//!
//! Exactly-once rests on three things: the job is stored before anyone is told it was
//! accepted; a job whose outcome is unknown (timeout, crash) is looked up on the remote
//! before it runs again; and every attempt carries the job's idempotency key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use provisio_core::trace::{TraceContext, TraceId};
use tracing::Instrument as _;

use chrono::Utc;
use provisio_core::job::{check_transition, status_after, Attempt, Job, JobId, JobState};
use provisio_core::module::{
    Action, ActionReply, ActionRequest, ErrorKind, Module, ModuleError, RemoteAccount,
};
use provisio_core::secret::as_sealed;
use provisio_core::server::Server;
use provisio_core::service::{ServiceStatus, SuspendReason, Suspension};
use provisio_core::settings::Settings;
use provisio_core::{ProductId, ServerId};
use provisio_store::{ClaimRequest, JobUpdate, ServiceChange};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::shutdown::Shutdown;
use tokio::task::JoinSet;

use crate::input::RecordRef;
use crate::jobs::call::{Prepared, ServiceRecords};
use crate::jobs::limits::Limits;
use crate::Engine;

pub use crate::runtime::{spawn, Stopper, WorkerHandle};

struct Shared {
    engine: Arc<Engine>,
    owner: String,
    /// Set while the database's notifications reach this worker (`listen_loop`).
    listening: std::sync::atomic::AtomicBool,
    /// Woken by those notifications.
    notified: tokio::sync::Notify,
    /// The jobs this worker holds a lease on, each with the attempt it runs. A job written
    /// back for a retry may be claimed again before that write is settled; the settling
    /// then leaves the new attempt here, so its lease goes on being renewed.
    inflight: Mutex<HashMap<JobId, u32>>,
    limits: Mutex<Limits>,
    cache: Mutex<RecordCache>,
    /// The order of this node's breaker transitions, taken under the `limits` lock.
    breaker_seq: std::sync::atomic::AtomicI64,
}

/// A breaker transition to publish for the console, numbered while the lock was held.
struct Transition {
    server: ServerId,
    state: crate::jobs::limits::BreakerState,
    seq: i64,
    at: Instant,
}

impl Shared {
    fn transition(&self, server: ServerId, state: crate::jobs::limits::BreakerState) -> Transition {
        Transition {
            server,
            state,
            seq: self
                .breaker_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            at: Instant::now(),
        }
    }

    /// Writes a transition in a task of its own, so that neither a claim nor an outcome
    /// waits for it; the sequence number keeps a late write from undoing a newer one.
    fn publish(&self, t: Transition) {
        use crate::jobs::limits::BreakerState;
        let store = self.engine.store.clone();
        let now = self.engine.now();
        let wall = |i: Instant| {
            now + chrono::Duration::from_std(i.saturating_duration_since(t.at)).unwrap_or_default()
        };
        let record = provisio_store::BreakerRecord {
            server_id: t.server,
            node: self.owner.clone(),
            state: t.state.name().to_string(),
            since: now,
            open_until: match t.state {
                BreakerState::Open { until } => Some(wall(until)),
                _ => None,
            },
            seq: t.seq,
        };
        tokio::spawn(async move {
            if let Err(e) = store.record_breaker(&record, now).await {
                tracing::warn!(error = %e, server = %record.server_id, "publishing a breaker state failed");
            }
        });
    }
}

/// Servers and products change rarely and every job reads them: a copy a couple of seconds
/// old saves most of a job's reads. Services and clients are always read fresh.
#[derive(Default)]
struct RecordCache {
    servers: HashMap<ServerId, (Instant, Server)>,
    products: HashMap<ProductId, (Instant, crate::ProductView)>,
}

const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl Shared {
    async fn server(&self, id: ServerId) -> Result<Option<Server>, String> {
        if let Some((at, s)) = self.cache.lock().unwrap().servers.get(&id) {
            if at.elapsed() < CACHE_TTL {
                return Ok(Some(s.clone()));
            }
        }
        let found = self
            .engine
            .store
            .get_server(id)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(s) = &found {
            self.cache
                .lock()
                .unwrap()
                .servers
                .insert(id, (Instant::now(), s.clone()));
        }
        Ok(found)
    }

    async fn product(&self, id: ProductId) -> Result<crate::ProductView, String> {
        if let Some((at, p)) = self.cache.lock().unwrap().products.get(&id) {
            if at.elapsed() < CACHE_TTL {
                return Ok(p.clone());
            }
        }
        let p = self
            .engine
            .get_product(&RecordRef::Id(id.0))
            .await
            .map_err(|e| e.to_string())?;
        self.cache
            .lock()
            .unwrap()
            .products
            .insert(id, (Instant::now(), p.clone()));
        Ok(p)
    }
}

/// What a finished execution reports to the writer.
struct Finished {
    update: JobUpdate,
    server: ServerId,
}

/// A job claimed on standby, waiting for a place on its server; its records are filled in
/// by the task that read the claim's (`pre`), or read by the job itself if it begins first.
struct Waiting {
    job: Job,
    pre: Option<Preloaded>,
}

/// The standby jobs this worker holds and has not begun, oldest first per server.
#[derive(Default)]
struct Standby {
    by_server: HashMap<ServerId, std::collections::VecDeque<Waiting>>,
    /// Begun in a finished job's place whose outcome (which hands the place over) is not
    /// yet written: still standby in the database.
    begun: HashSet<JobId>,
}

impl Standby {
    fn len(&self) -> usize {
        self.by_server.values().map(|q| q.len()).sum()
    }

    fn take(&mut self, server: ServerId) -> Option<Waiting> {
        let q = self.by_server.get_mut(&server)?;
        let w = q.pop_front();
        if q.is_empty() {
            self.by_server.remove(&server);
        }
        w
    }

    /// A held job the database promoted into a free place.
    fn remove(&mut self, server: ServerId, id: JobId) -> Option<Waiting> {
        let q = self.by_server.get_mut(&server)?;
        let at = q.iter().position(|w| w.job.id == id)?;
        let w = q.remove(at);
        if q.is_empty() {
            self.by_server.remove(&server);
        }
        w
    }

    fn fill(&mut self, server: ServerId, id: JobId, pre: Preloaded) {
        if let Some(w) = self
            .by_server
            .get_mut(&server)
            .and_then(|q| q.iter_mut().find(|w| w.job.id == id))
        {
            w.pre = Some(pre);
        }
    }
}

/// A job's service and client, read for a whole claimed batch at once.
type Preloaded = (
    provisio_core::service::Service,
    Option<provisio_core::client::Client>,
);

/// Starts the worker's loops over `engine` (turns, lease heartbeat, maintenance);
/// `owner` names this process in job leases.
pub(crate) fn start(tasks: &mut JoinSet<()>, engine: Arc<Engine>, owner: String, stop: &Shutdown) {
    let shared = Arc::new(Shared {
        limits: Mutex::new(Limits::new(engine.options.jobs.breaker.clone())),
        engine,
        owner,
        listening: std::sync::atomic::AtomicBool::new(false),
        notified: tokio::sync::Notify::new(),
        inflight: Mutex::new(HashMap::new()),
        cache: Mutex::new(RecordCache::default()),
        breaker_seq: std::sync::atomic::AtomicI64::new(1),
    });
    let (tx, rx) = mpsc::unbounded_channel::<Finished>();
    tasks.spawn(queue_loop(shared.clone(), tx, rx, stop.clone()));
    tasks.spawn(heartbeat_loop(shared.clone(), stop.clone()));
    tasks.spawn(listen_loop(shared.clone(), stop.clone()));
    // Due unsuspensions and the clean-up are the schedule's doing.
    tasks.spawn(provisio_store::acting(
        provisio_core::access::Actor::Scheduler,
        maintenance_loop(shared, stop.clone()),
    ));
}

/// The worker's turns. Each first claims jobs for the free slots, counting as free the
/// slots of jobs whose remote call is over though their outcome is not yet written, and
/// starts them; then it hands those outcomes to a write of their own (`MAX_WRITES` at
/// once) and goes on. Claiming first, and not waiting for the write, keeps
/// a slot's idle time between two remote calls to about one short claim.
async fn queue_loop(
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Finished>,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    mut stop: Shutdown,
) {
    let engine = shared.engine.clone();
    let opts = engine.options.jobs.clone();
    // One task per claimed batch; each job reports through `tx` when it ends.
    let mut running: JoinSet<()> = JoinSet::new();
    let mut batch: Vec<Finished> = Vec::new();
    // When the oldest outcome of `batch` came in: a write waits for `OUTCOME_TICK` after it.
    let mut batch_since: Option<Instant> = None;
    // How many of `batch` the last claim already counted as free slots.
    let mut claimed_for = 0;
    let mut writes: JoinSet<WriteDone> = JoinSet::new();
    let mut writing: HashSet<JobId> = HashSet::new();
    // Jobs held ahead, and the finished jobs that handed their place to one of them (not
    // free places for a claim: the standby job took them) until their outcome is written.
    let mut standby = Standby::default();
    let mut handing: HashSet<JobId> = HashSet::new();
    // How many of `batch` have been offered a standby job to hand their place to.
    let mut offered = 0;
    // The claim in flight: the turns go on meanwhile, so a call that ends during a claim
    // hands its place to a standby job at once rather than after the claim.
    let mut claiming: Option<futures::future::BoxFuture<'static, ClaimDone>> = None;
    let mut claimed: Option<ClaimDone> = None;
    // Writes ended but not yet settled (see the turn's start).
    let mut unsettled: Vec<WriteDone> = Vec::new();
    // The records of standby jobs, read after their claim.
    let (pre_tx, mut pre_rx) = mpsc::unbounded_channel::<(ServerId, JobId, Preloaded)>();
    let mut servers_loaded = Instant::now() - std::time::Duration::from_secs(3600);
    let mut claim_due = true;
    let mut held_back = false;
    // The earliest retry this worker wrote back, which no notification announces when due.
    let mut next_retry: Option<Instant> = None;
    let pulse = engine
        .heartbeats()
        .register("worker", opts.poll_interval.max(opts.fallback_poll));
    // Counted among the workers that share the servers' slots before the first claim; the
    // lease heartbeat keeps it so.
    if let Err(e) = engine
        .store
        .queue_presence(&shared.owner, engine.now(), true)
        .await
    {
        tracing::warn!(error = %e, "marking this worker present failed");
    }
    loop {
        pulse.beat();
        while running.try_join_next().is_some() {}
        // No claim just for a write: the jobs it lets through (a finished job's service's
        // next) are announced on PostgreSQL, and wait for the next turn or poll on SQLite.
        // Except while jobs are held on standby (below): a write that hands places over may
        // leave places free that no later finish will announce, with held jobs waiting.
        // A claim's answer is taken in before any write that ended after it was asked: a
        // standby job begun while the claim was in flight may be among the jobs it
        // promoted, and only until that job's write is settled is it known as begun here.
        if let Some(done) = claimed.take() {
            let turn = Turn {
                running: &mut running,
                standby: &mut standby,
                claim_due: &mut claim_due,
                servers_loaded: &mut servers_loaded,
            };
            took(&shared, &tx, &pre_tx, done, turn, batch.is_empty()).await;
        }
        while let Some(done) = writes.try_join_next() {
            if let Ok(done) = done {
                unsettled.push(done);
            }
        }
        if claiming.is_none() {
            for done in unsettled.drain(..) {
                settle(
                    &shared,
                    done,
                    &mut writing,
                    &mut handing,
                    &mut standby,
                    &mut next_retry,
                );
                if !standby.by_server.is_empty() {
                    claim_due = true;
                }
            }
        }
        while let Ok((server, id, pre)) = pre_rx.try_recv() {
            standby.fill(server, id, pre);
        }
        // Read before draining: once no batch runs, every outcome is already in the channel.
        let idle = running.is_empty();
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            batch_since = None;
        } else if batch_since.is_none() {
            batch_since = Some(Instant::now());
        }
        let stopping = stop.is_stopping();
        // A stopping worker begins nothing new: the jobs it holds ahead go back at once,
        // as they were (never begun, so no lookup), for the other nodes to take.
        if stopping && standby.len() > 0 {
            release_standby(&shared, &mut standby).await;
        }
        // A finished call's place goes straight to a job held for its server, if any, while
        // nothing but `max_concurrent` limits that server (no rate, breaker closed).
        if !stopping && !standby.by_server.is_empty() && batch.len() > offered {
            let capped = shared.limits.lock().unwrap().allowance(Instant::now());
            for f in batch.iter_mut().skip(offered) {
                if capped.contains_key(&f.server) {
                    continue;
                }
                let Some(w) = standby.take(f.server) else {
                    continue;
                };
                f.update.handed_to = Some(w.job.id);
                handing.insert(f.update.job_id);
                standby.begun.insert(w.job.id);
                shared
                    .limits
                    .lock()
                    .unwrap()
                    .started(w.job.server_id, Instant::now());
                running.spawn(run_job(shared.clone(), tx.clone(), w.job, w.pre));
            }
        }
        offered = batch.len();
        // Past the drain, calls still running are cancelled; the next turns write the
        // outcomes that came in before, and what is left is handed back below.
        let drained = stopping
            && engine
                .drain_deadline()
                .is_some_and(|d| tokio::time::Instant::now() >= d);
        if drained && !idle {
            running.abort_all();
            while running.join_next().await.is_some() {}
            continue;
        }
        if stopping
            && idle
            && batch.is_empty()
            && writes.is_empty()
            && unsettled.is_empty()
            && claiming.is_none()
        {
            release_unfinished(&shared).await;
            // The other nodes may take this one's share at once.
            if let Err(e) = engine
                .store
                .queue_presence(&shared.owner, engine.now(), false)
                .await
            {
                tracing::warn!(error = %e, "leaving the queue's workers failed; the entry expires after a lease");
            }
            break;
        }
        // Rates come from the server records; reading them every couple of seconds is plenty.
        if !stopping && servers_loaded.elapsed() > std::time::Duration::from_secs(2) {
            if let Ok(list) = load_servers(&engine).await {
                let now = Instant::now();
                let mut l = shared.limits.lock().unwrap();
                for (id, rate) in list {
                    l.configure(id, rate, now);
                }
            }
            servers_loaded = Instant::now();
        }
        // Jobs whose outcome is about to be written no longer take a place, but no more
        // than `max_in_flight` of them wait for their write: past that the writes are the
        // limit, and claiming ahead of them only adds leases to renew and ids to every
        // claim's finishing list.
        let held = shared.inflight.lock().unwrap().len();
        let executing = held.saturating_sub(batch.len() + writing.len() + standby.len());
        let max = opts.max_in_flight as usize;
        let free = if stopping {
            0
        } else {
            max.saturating_sub(executing)
                .min((2 * max).saturating_sub(held))
        };
        let claim_now = claiming.is_none() && free > 0 && (claim_due || batch.len() > claimed_for);
        // Outcomes wait a tick for more to write with them (their slots are free already):
        // fewer, fuller transactions, each the same few statements.
        let tick_left =
            batch_since.map_or(OUTCOME_TICK, |t| OUTCOME_TICK.saturating_sub(t.elapsed()));
        let write_due = |batch: &Vec<Finished>, writes: &JoinSet<_>, left: std::time::Duration| {
            !batch.is_empty()
                && writes.len() < MAX_WRITES
                && (stopping || batch.len() >= OUTCOME_BATCH || left.is_zero())
        };
        if !claim_now && !write_due(&batch, &writes, tick_left) {
            let tick = !batch.is_empty() && writes.len() < MAX_WRITES;
            // Woken by the database, every node hears of a job at the same moment, and the
            // node that queued it gets no head start from its own in-memory wake-up.
            let listening = shared.listening.load(std::sync::atomic::Ordering::Relaxed);
            let mut poll = if listening && !held_back {
                opts.fallback_poll
            } else {
                opts.poll_interval
            };
            if let Some(due) = next_retry {
                poll = poll.min(due.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = rx.recv_many(&mut batch, 512) => {}
                _ = engine.wake.notified(), if !listening => claim_due = true,
                _ = shared.notified.notified() => claim_due = true,
                _ = tokio::time::sleep(poll) => {
                    claim_due = true;
                    next_retry = None;
                }
                _ = stop.stopped(), if !stopping => {}
                _ = tokio::time::sleep(tick_left), if tick => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                done = async { claiming.as_mut().expect("guarded").await }, if claiming.is_some() => {
                    claiming = None;
                    claimed = Some(done);
                }
                Some(done) = writes.join_next(), if !writes.is_empty() => {
                    if let Ok(done) = done {
                        unsettled.push(done);
                    }
                }
            }
            continue;
        }
        if claim_now {
            let finishing: Vec<JobId> = batch
                .iter()
                .map(|f| f.update.job_id)
                .chain(writing.iter().copied())
                .filter(|id| !handing.contains(id))
                .collect();
            let begun: Vec<JobId> = standby.begun.iter().copied().collect();
            claimed_for = batch.len();
            let (allowance, rate_held, ahead) = {
                let mut l = shared.limits.lock().unwrap();
                let a = l.allowance(Instant::now());
                (
                    a,
                    l.rate_exhausted(),
                    l.standby(opts.standby, STANDBY_MIN_CALL),
                )
            };
            // Rate tokens and a closing breaker announce nothing: look again soon.
            held_back = !rate_held.is_empty() || allowance.values().any(|a| *a == 0);
            for server in rate_held {
                if let Some(labels) = engine.cached_server_labels(server) {
                    crate::metrics::rate_limited(&labels.server);
                }
            }
            let now = engine.now();
            let lease_until = now + chrono::Duration::from_std(opts.lease).unwrap_or_default();
            let store = engine.store.clone();
            let owner = shared.owner.clone();
            claiming = Some(Box::pin(async move {
                let req = ClaimRequest {
                    owner: &owner,
                    now,
                    lease_until,
                    max_total: free as u32,
                    allowance: &allowance,
                    finishing: &finishing,
                    standby: &ahead,
                    started: &begun,
                };
                ClaimDone {
                    result: store.claim_ahead(&req).await,
                    asked: now,
                    free,
                }
            }));
        }
        let tick_left =
            batch_since.map_or(OUTCOME_TICK, |t| OUTCOME_TICK.saturating_sub(t.elapsed()));
        if !write_due(&batch, &writes, tick_left) {
            continue;
        }
        let written = std::mem::take(&mut batch);
        batch_since = None;
        claimed_for = 0;
        offered = 0;
        writing.extend(written.iter().map(|f| f.update.job_id));
        let store = engine.store.clone();
        writes.spawn(async move {
            let updates: Vec<JobUpdate> = written.iter().map(|f| f.update.clone()).collect();
            loop {
                use futures::FutureExt as _;
                match std::panic::AssertUnwindSafe(store.finish_jobs(&updates))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(applied)) => return (written, applied, true),
                    // Keep the outcomes and try again: losing them would mean running the
                    // actions a second time (after a lookup) when the lease runs out.
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "writing job outcomes failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    // Their leases run out and the jobs are looked up, as after a crash.
                    Err(_) => {
                        tracing::error!("writing job outcomes panicked; the jobs will be looked up when their leases end");
                        let lost = vec![false; written.len()];
                        return (written, lost, false);
                    }
                }
            }
        });
    }
}

/// A claim's answer, with what it was asked under.
struct ClaimDone {
    result: provisio_store::Result<provisio_store::Claimed>,
    asked: chrono::DateTime<Utc>,
    free: usize,
}

/// The parts of the turns' state a claim's answer changes.
struct Turn<'a> {
    running: &'a mut JoinSet<()>,
    standby: &'a mut Standby,
    claim_due: &'a mut bool,
    servers_loaded: &'a mut Instant,
}

/// Takes in a claim's answer: begins the jobs to run (held jobs the claim promoted with
/// the records read for them), holds the standby ones.
async fn took(
    shared: &Arc<Shared>,
    tx: &mpsc::UnboundedSender<Finished>,
    pre_tx: &mpsc::UnboundedSender<(ServerId, JobId, Preloaded)>,
    done: ClaimDone,
    turn: Turn<'_>,
    nothing_to_write: bool,
) {
    let claimed = match done.result {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "claiming jobs failed; will try again");
            *turn.claim_due = true;
            if nothing_to_write {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            return;
        }
    };
    // A full claim may have left more due right away.
    *turn.claim_due = claimed.run.len() == done.free;
    let mut jobs = Vec::with_capacity(claimed.run.len());
    let mut promoted = Vec::new();
    for job in claimed.run {
        match turn.standby.remove(job.server_id, job.id) {
            Some(w) => promoted.push((job, w.pre)),
            // Begun here already, in a finished job's place while this claim was in flight
            // (its `started` did not name it yet), or in one whose handing over was never
            // written (a write that panicked). It must not run twice; the place the claim
            // gave it stays unused until that finished job's outcome is written.
            None if turn.standby.begun.contains(&job.id) => {
                tracing::debug!(job = %job.id, "a claim promoted a standby job already begun");
            }
            None => jobs.push(job),
        }
    }
    for job in claimed.standby.iter().chain(&jobs) {
        let waited = (done.asked - job.run_after).num_microseconds().unwrap_or(0);
        crate::metrics::queue_wait(waited as f64 / 1e6);
    }
    let now = Instant::now();
    let mut probes = Vec::new();
    {
        let mut inflight = shared.inflight.lock().unwrap();
        let mut limits = shared.limits.lock().unwrap();
        for job in &claimed.standby {
            inflight.insert(job.id, job.attempts + 1);
            turn.standby
                .by_server
                .entry(job.server_id)
                .or_default()
                .push_back(Waiting {
                    job: job.clone(),
                    pre: None,
                });
        }
        for job in jobs.iter().chain(promoted.iter().map(|(j, _)| j)) {
            if !limits.knows(job.server_id) {
                // A server created since the last read: fetch its rate soon.
                *turn.servers_loaded = now - std::time::Duration::from_secs(3600);
            }
            inflight.insert(job.id, job.attempts + 1);
            if let Some(state) = limits.started(job.server_id, now) {
                probes.push(shared.transition(job.server_id, state));
            }
        }
    }
    for t in probes {
        shared.publish(t);
    }
    for (job, pre) in promoted {
        turn.running
            .spawn(run_job(shared.clone(), tx.clone(), job, pre));
    }
    if !jobs.is_empty() || !claimed.standby.is_empty() {
        turn.running.spawn(run_batch(
            shared.clone(),
            tx.clone(),
            jobs,
            claimed.standby,
            pre_tx.clone(),
        ));
    }
}

/// Servers whose calls take less than this on average get no jobs held ahead (see
/// `Limits::standby`).
const STANDBY_MIN_CALL: std::time::Duration = std::time::Duration::from_millis(5);

/// How long the first outcome of a batch waits for others before it is written, and how
/// many are written at once without waiting. A finished job's slot is free before its
/// outcome is written, so the wait costs no remote call any time.
const OUTCOME_TICK: std::time::Duration = std::time::Duration::from_millis(2);
const OUTCOME_BATCH: usize = 128;

/// Outcome writes in flight at once. One: the turns claim while it runs, and the outcomes
/// that come in meanwhile make the next write's batch (more at once would write smaller
/// batches, more statements for the same outcomes).
const MAX_WRITES: usize = 1;

/// After an outcome write: frees the jobs' places, announces those whose lease still held,
/// and notes the earliest retry written back.
/// A write's outcomes, per outcome whether its lease still held, and whether the write
/// committed at all (not when it panicked).
type WriteDone = (Vec<Finished>, Vec<bool>, bool);

fn settle(
    shared: &Shared,
    (written, applied, written_ok): WriteDone,
    writing: &mut HashSet<JobId>,
    handing: &mut HashSet<JobId>,
    standby: &mut Standby,
    next_retry: &mut Option<Instant>,
) {
    let engine = &shared.engine;
    let now = engine.now();
    for u in written.iter().map(|f| &f.update) {
        if u.state == JobState::Pending {
            let wait = (u.run_after - now).to_std().unwrap_or_default();
            let due = Instant::now() + wait;
            *next_retry = Some(next_retry.map_or(due, |d| d.min(due)));
        }
    }
    for (f, held) in written.into_iter().zip(applied) {
        let id = f.update.job_id;
        writing.remove(&id);
        // Written with this outcome (whether or not its lease held): the standby job now
        // takes the place. A write that panicked wrote nothing; the job stays named as
        // begun, so a claim that promotes it does not start it again, until its own
        // outcome is settled.
        if handing.remove(&id) {
            if let Some(to) = f.update.handed_to {
                if written_ok {
                    standby.begun.remove(&to);
                }
            }
        }
        standby.begun.remove(&id);
        {
            let mut inflight = shared.inflight.lock().unwrap();
            if inflight.get(&id) == Some(&f.update.attempts) {
                inflight.remove(&id);
            }
        }
        if held {
            let _ = engine.finished.send((f.update.job_id, f.update.state));
        } else {
            tracing::warn!(job = %f.update.job_id, "lease lost before the outcome was written; another worker will look it up");
        }
    }
}

/// Runs a claimed batch: reads its records together (and those of the jobs it put on
/// standby, handed back through `held_tx`), then each job on its own.
async fn run_batch(
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Finished>,
    jobs: Vec<Job>,
    held: Vec<Job>,
    held_tx: mpsc::UnboundedSender<(ServerId, JobId, Preloaded)>,
) {
    let ids = jobs.iter().chain(&held).map(|j| j.service_id).collect();
    let mut preloaded = preload(&shared.engine, ids).await;
    for h in &held {
        if let Some(p) = preloaded.remove(&h.service_id) {
            let _ = held_tx.send((h.server_id, h.id, p));
        }
    }
    let mut set = JoinSet::new();
    for job in jobs {
        let pre = preloaded.remove(&job.service_id);
        set.spawn(run_job(shared.clone(), tx.clone(), job, pre));
    }
    while set.join_next().await.is_some() {}
}

/// Runs one job and reports its outcome through `tx`.
async fn run_job(
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Finished>,
    job: Job,
    pre: Option<Preloaded>,
) {
    {
        {
            use futures::FutureExt as _;
            let server = job.server_id;
            let labels = if crate::metrics::enabled() {
                shared.engine.server_labels(server).await
            } else {
                None
            };
            if let Some(l) = &labels {
                crate::metrics::in_flight(l, 1.0);
            }
            let t0 = Instant::now();
            let action = job.action.clone();
            // A job queued before trace ids were kept gets one for this attempt only.
            let trace = TraceContext::in_trace(job.trace_id.unwrap_or_else(TraceId::random));
            let span = crate::trace::attempt_span(&job, trace);
            let attempt = provisio_modules::trace::scope(trace, execute(&shared, job.clone(), pre))
                .instrument(span.clone());
            // A panic in the engine's own handling of the job (the module's are caught at
            // the call) still costs one attempt: the job goes back with a lookup first and
            // its slot and lease are released like any other outcome's.
            let (update, health) = match std::panic::AssertUnwindSafe(attempt).catch_unwind().await
            {
                Ok(done) => done,
                Err(payload) => {
                    let why = crate::jobs::call::panic_message(payload.as_ref());
                    tracing::error!(job = %job.id, service = %job.service_id, panic = %why, "running a job panicked");
                    (panicked(&shared, &job, why).await, Some(false))
                }
            };
            // Before the outcome is written (which frees the server's slot), so a breaker
            // that opens now holds back the next claim.
            if let Some(h) = health {
                let changed = {
                    let mut limits = shared.limits.lock().unwrap();
                    limits.took(server, t0.elapsed(), Instant::now());
                    limits
                        .finished(server, h, Instant::now())
                        .map(|state| shared.transition(server, state))
                };
                if let Some(t) = changed {
                    let state = t.state;
                    shared.publish(t);
                    tracing::warn!(server = %server, ?state, "circuit breaker changed");
                    if let Some(l) = &labels {
                        let open = state != crate::jobs::limits::BreakerState::Closed;
                        crate::metrics::breaker(&l.server, open);
                    }
                }
            }
            span.record("outcome", update.attempt.outcome.as_str());
            span.in_scope(|| {
                tracing::debug!(
                    outcome = %update.attempt.outcome,
                    duration_ms = update.attempt.duration_ms,
                    "job attempt finished"
                )
            });
            if let Some(l) = &labels {
                crate::metrics::in_flight(l, -1.0);
                crate::metrics::job_attempt(
                    l,
                    action.as_str(),
                    &update.attempt.outcome,
                    t0.elapsed(),
                );
            }
            let _ = tx.send(Finished { update, server });
        }
    }
}

/// Reads the services and clients of a claimed batch in two queries rather than two per
/// job. A failed read only means each job reads its own.
async fn preload(
    engine: &Engine,
    ids: Vec<provisio_core::ServiceId>,
) -> HashMap<provisio_core::ServiceId, Preloaded> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return out;
    }
    let Ok(services) = engine.store.get_services(&ids).await else {
        return out;
    };
    let mut client_ids: Vec<_> = services.iter().map(|s| s.client_id).collect();
    client_ids.sort();
    client_ids.dedup();
    let Ok(clients) = engine.store.get_clients(&client_ids).await else {
        return out;
    };
    let clients: HashMap<_, _> = clients.into_iter().map(|c| (c.id, c)).collect();
    for s in services {
        let c = clients.get(&s.client_id).cloned();
        out.insert(s.id, (s, c));
    }
    out
}

async fn load_servers(engine: &Engine) -> provisio_store::Result<Vec<(ServerId, Option<u32>)>> {
    let mut out = Vec::new();
    let mut page =
        provisio_core::page::PageRequest::first(provisio_core::page::PageRequest::MAX_LIMIT);
    loop {
        let p = engine.store.list_servers(&Default::default(), page).await?;
        for s in &p.items {
            engine.remember_server_labels(s);
        }
        out.extend(p.items.iter().map(|s| (s.id, s.max_per_second)));
        match p.next {
            Some(n) => page.after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Passes the database's notifications of pending jobs to the worker's turns; while it
/// cannot listen, the turns poll at `poll_interval` as they would without. It has no
/// heartbeat pulse: its wait is not cut short for one (a cancelled receive could lose part
/// of a message), and while it is down the turns poll, so nothing waits on it.
async fn listen_loop(shared: Arc<Shared>, mut stop: Shutdown) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let mut notes = match shared.engine.store.job_notifications().await {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "listening for queued jobs failed; polling meanwhile");
                shared.listening.store(false, Relaxed);
                if stop.sleep(std::time::Duration::from_secs(5)).await {
                    return;
                }
                continue;
            }
        };
        shared.listening.store(true, Relaxed);
        // Whatever was queued before the listening began.
        shared.notified.notify_one();
        loop {
            tokio::select! {
                r = notes.next() => match r {
                    Ok(_) => shared.notified.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "the connection listening for queued jobs failed; polling meanwhile");
                        shared.listening.store(false, Relaxed);
                        shared.notified.notify_one();
                        break;
                    }
                },
                _ = stop.stopped() => {
                    shared.listening.store(false, Relaxed);
                    return;
                }
            }
        }
    }
}

/// Renews the leases of the jobs this worker runs, every third of a lease. It goes on
/// while a stopping worker drains, so that no other worker takes over a job whose call may
/// still be running here, and ends once none is left.
async fn heartbeat_loop(shared: Arc<Shared>, mut stop: Shutdown) {
    let lease = shared.engine.options.jobs.lease;
    let every = lease / 3;
    let mut renewed = Instant::now();
    let pulse = shared
        .engine
        .heartbeats()
        .register("lease_heartbeat", every);
    loop {
        pulse.beat();
        if stop.is_stopping() {
            if shared.inflight.lock().unwrap().is_empty() {
                return;
            }
            // Look often whether the drain is over; renew as usual.
            tokio::time::sleep(every.min(std::time::Duration::from_millis(100))).await;
        } else {
            stop.sleep(every).await;
        }
        if renewed.elapsed() < every {
            continue;
        }
        renewed = Instant::now();
        // Leases first: a late renewal lets another node take over a live job, a late
        // presence mark only shrinks the other nodes' shares for a moment.
        let ids: Vec<JobId> = shared.inflight.lock().unwrap().keys().copied().collect();
        if !ids.is_empty() {
            let until = shared.engine.now() + chrono::Duration::from_std(lease).unwrap_or_default();
            if let Err(e) = shared
                .engine
                .store
                .renew_leases(&shared.owner, &ids, until)
                .await
            {
                tracing::warn!(error = %e, "renewing leases failed");
            }
        }
        if !stop.is_stopping() {
            if let Err(e) = shared
                .engine
                .store
                .queue_presence(&shared.owner, shared.engine.now(), true)
                .await
            {
                tracing::warn!(error = %e, "marking this worker present failed");
            }
        }
    }
}

/// Hands back the standby jobs a stopping worker holds and has not begun, as they were:
/// pending, no lookup (no call was made), for the other nodes to take at once.
async fn release_standby(shared: &Shared, standby: &mut Standby) {
    let ids: Vec<JobId> = std::mem::take(&mut standby.by_server)
        .into_values()
        .flatten()
        .map(|w| w.job.id)
        .collect();
    if ids.is_empty() {
        return;
    }
    {
        let mut inflight = shared.inflight.lock().unwrap();
        for id in &ids {
            inflight.remove(id);
        }
    }
    if let Err(e) = shared
        .engine
        .store
        .release_standby(&shared.owner, &ids, shared.engine.now())
        .await
    {
        tracing::warn!(error = %e, jobs = ids.len(), "handing back standby jobs failed; their leases will expire instead");
    }
}

/// Hands back the jobs a stopping worker cancelled at the end of its drain: pending, to
/// be looked up first (the cancelled call may have reached the remote), lease cleared so
/// another worker takes them at once.
async fn release_unfinished(shared: &Shared) {
    let ids: Vec<JobId> = shared
        .inflight
        .lock()
        .unwrap()
        .drain()
        .map(|(id, _)| id)
        .collect();
    if ids.is_empty() {
        return;
    }
    match shared
        .engine
        .store
        .release_jobs(&shared.owner, &ids, shared.engine.now())
        .await
    {
        Ok(n) => tracing::warn!(
            jobs = n,
            "the drain ended before these jobs did; handed back to be looked up first"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "handing back unfinished jobs failed; their leases will expire instead"
        ),
    }
}

async fn maintenance_loop(shared: Arc<Shared>, mut stop: Shutdown) {
    let engine = shared.engine.clone();
    let mut state = Maintenance::default();
    let every = (engine.options.jobs.lease / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    let pulse = engine.heartbeats().register("maintenance", every);
    loop {
        pulse.beat();
        use futures::FutureExt as _;
        // A panic costs one turn: the next still takes over expired leases.
        if let Err(payload) = std::panic::AssertUnwindSafe(maintenance_turn(&engine, &mut state))
            .catch_unwind()
            .await
        {
            let why = crate::jobs::call::panic_message(payload.as_ref());
            tracing::error!(panic = %why, "a maintenance turn panicked");
        }
        if state
            .last_breakers
            .is_none_or(|t: Instant| t.elapsed() > BREAKERS_SEEN_EVERY)
        {
            state.last_breakers = Some(Instant::now());
            let now = engine.now();
            let forget = now - chrono::Duration::minutes(10);
            if let Err(e) = engine
                .store
                .touch_breakers(&shared.owner, now, forget)
                .await
            {
                tracing::warn!(error = %e, "marking this node's breaker states seen failed");
            }
        }
        if stop.sleep(every).await {
            // A node that stops says so: the console shows only live nodes' breakers.
            if let Err(e) = engine.store.drop_breakers(&shared.owner).await {
                tracing::warn!(error = %e, "removing this node's breaker states failed");
            }
            return;
        }
    }
}

/// When the hourly parts of maintenance last ran.
#[derive(Default)]
struct Maintenance {
    last_purge: Option<Instant>,
    last_cleanup: Option<Instant>,
    last_retention: Option<Instant>,
    last_gauges: Option<Instant>,
    last_breakers: Option<Instant>,
}

/// How often a worker node marks its published breaker states seen; the console shows the
/// breakers of nodes seen within [`BREAKERS_SEEN_WITHIN`].
const BREAKERS_SEEN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How recently a node must have marked its breakers seen for the console to show them.
pub const BREAKERS_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// How often a worker node reads the queue gauges from the database.
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often finished history is trimmed: often enough that each pass has little to do.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The longest single trim statement of this process, in microseconds: the longest time
/// retention held the database writer (`provisio-bench retention` prints it).
static LONGEST_TRIM_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The longest single trim statement of this process since the last call (which starts
/// a new measurement).
pub fn take_longest_trim_statement() -> std::time::Duration {
    std::time::Duration::from_micros(
        LONGEST_TRIM_MICROS.swap(0, std::sync::atomic::Ordering::Relaxed),
    )
}

/// Trims every kind of finished history older than its retention, one small batch per
/// statement, yielding between batches so that claims and outcomes get the writer in
/// between. Returns how many rows of each kind went.
pub async fn trim_history(
    engine: &Engine,
    now: chrono::DateTime<Utc>,
) -> provisio_store::Result<[(&'static str, u64); 6]> {
    let r = &engine.options.retention;
    let batch = r.batch.max(1);
    let store = &engine.store;
    let cut = |keep: Option<std::time::Duration>| {
        keep.and_then(|k| chrono::Duration::from_std(k).ok())
            .map(|k| now - k)
    };
    let mut counts = [
        ("jobs", 0),
        ("deliveries", 0),
        ("rule_runs", 0),
        ("audits", 0),
        ("usage_syncs", 0),
        ("idempotency_keys", 0),
    ];
    let cuts = [
        cut(r.jobs),
        cut(r.deliveries),
        cut(r.rule_runs),
        cut(r.audits),
        cut(r.usage_syncs),
        cut(r.idempotency_keys),
    ];
    for (i, before) in cuts.into_iter().enumerate() {
        let Some(before) = before else { continue };
        loop {
            let started = Instant::now();
            let n = match i {
                0 => store.trim_jobs(before, batch).await?,
                1 => store.trim_deliveries(before, batch).await?,
                2 => store.trim_rule_runs(before, batch).await?,
                3 => store.trim_audits(before, batch).await?,
                4 => store.trim_sync_runs(before, batch).await?,
                _ => store.trim_idempotency_keys(before, batch).await?,
            };
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            LONGEST_TRIM_MICROS.fetch_max(took, std::sync::atomic::Ordering::Relaxed);
            counts[i].1 += n;
            if n < u64::from(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(counts)
}

/// One turn: expired leases back to the queue, hourly trimming and clean-up, timed
/// unsuspends.
async fn maintenance_turn(engine: &Arc<Engine>, state: &mut Maintenance) {
    let Maintenance {
        last_purge,
        last_cleanup,
        last_retention,
        last_gauges,
        ..
    } = state;
    if crate::metrics::enabled() && last_gauges.is_none_or(|t: Instant| t.elapsed() > GAUGES_EVERY)
    {
        *last_gauges = Some(Instant::now());
        match engine.store.job_gauges().await {
            Ok(g) => crate::metrics::job_gauges(&g, engine.now()),
            Err(e) => tracing::warn!(error = %e, "reading the queue gauges failed"),
        }
        crate::metrics::upkeep();
    }
    match engine.store.requeue_expired(engine.now()).await {
        Ok(n) if n > 0 => {
            tracing::warn!(
                jobs = n,
                "took over jobs whose worker stopped answering; they will be looked up first"
            );
            engine.wake.notify_one();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "requeueing expired jobs failed"),
    }
    // Retention is counted in days: trimming once an hour is plenty.
    if last_purge.is_none_or(|t: Instant| t.elapsed() > std::time::Duration::from_secs(3600)) {
        match engine.purge_events(engine.now()).await {
            Ok(_) => *last_purge = Some(Instant::now()),
            Err(e) => tracing::warn!(error = %e, "trimming old events failed"),
        }
    }
    if last_retention.is_none_or(|t: Instant| t.elapsed() > RETENTION_EVERY) {
        *last_retention = Some(Instant::now());
        match trim_history(engine, engine.now()).await {
            Ok(counts) => {
                let [(_, jobs), (_, deliveries), (_, rule_runs), (_, audits), (_, usage_syncs), (_, idempotency_keys)] =
                    counts;
                if counts.iter().any(|(_, n)| *n > 0) {
                    tracing::info!(
                        jobs,
                        deliveries,
                        rule_runs,
                        audits,
                        usage_syncs,
                        idempotency_keys,
                        "trimmed finished history past its retention"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "trimming finished history failed"),
        }
    }
    if let Some(after) = engine.options.cleanup_after {
        if last_cleanup.is_none_or(|t: Instant| t.elapsed() > std::time::Duration::from_secs(3600))
        {
            *last_cleanup = Some(Instant::now());
            match engine.cleanup(after, false).await {
                Ok(done) if !done.is_empty() => tracing::info!(
                    services = done.len(),
                    after = %crate::durations::describe(after),
                    "clean-up terminates long-suspended services"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the clean-up failed"),
            }
        }
    }
    match engine.store.due_unsuspends(engine.now(), 500).await {
        Ok(due) => {
            for s in due {
                if let Err(e) = engine
                    .request_action(s.id, Action::Unsuspend, Default::default())
                    .await
                {
                    tracing::warn!(service = %s.id, error = %e, "automatic unsuspend could not be queued");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for due unsuspends failed"),
    }
}

/// Everything one execution needs, loaded fresh for each job.
struct Loaded {
    /// The service as it was when the job started, for the events announcing the outcome.
    service: provisio_core::service::Service,
    request: ActionRequest,
    module: Arc<dyn Module>,
    status: ServiceStatus,
    outputs: Settings,
    /// The product's map of client field → module output.
    client_fields: provisio_core::product::ClientFieldMap,
}

async fn load(shared: &Shared, job: &Job, pre: Option<Preloaded>) -> Result<Loaded, String> {
    let engine = &shared.engine;
    let store = &engine.store;
    let fail = |e: &dyn std::fmt::Display| format!("loading the job's records failed: {e}");
    let (service, client) = match pre {
        Some((service, client)) => (service, client),
        None => {
            let service = store
                .get_service(job.service_id)
                .await
                .map_err(|e| fail(&e))?
                .ok_or("the service no longer exists")?;
            let client = store
                .get_client(service.client_id)
                .await
                .map_err(|e| fail(&e))?;
            (service, client)
        }
    };
    let server = shared
        // The job's server: the service's, except for the two jobs of a transfer.
        .server(job.server_id)
        .await
        .map_err(|e| fail(&e))?
        .ok_or("the server no longer exists")?;
    let product = shared
        .product(service.product_id)
        .await
        .map_err(|e| fail(&e))?;
    let new_product = match job.params.get("product_id").and_then(Value::as_i64) {
        Some(pid) => Some(shared.product(ProductId(pid)).await.map_err(|e| fail(&e))?),
        None => None,
    };
    let Prepared { module, request } = engine.service_request(
        ServiceRecords {
            server: &server,
            product: &product,
            service: &service,
            client: client.as_ref(),
            new_product: new_product.as_ref(),
        },
        job.action.clone(),
        job.idempotency_key.clone(),
        &job.params,
    )?;
    Ok(Loaded {
        request,
        module,
        status: service.status,
        outputs: service.outputs.clone(),
        client_fields: product.product.client_fields.clone(),
        service,
    })
}

/// Whether the remote state a lookup found shows the action already took effect. `params`
/// are the request's: a package change has taken effect when the account reports the new
/// product's package (its `package` setting, else its name, as audits read packages).
fn already_done(action: &Action, account: Option<&RemoteAccount>, params: &Settings) -> bool {
    match action {
        Action::Create => account.is_some(),
        Action::Terminate => account.is_none(),
        Action::Suspend => account.and_then(|a| a.status.as_deref()) == Some("suspended"),
        Action::Unsuspend => account.and_then(|a| a.status.as_deref()) == Some("active"),
        Action::ChangePackage => {
            let want = params
                .get("new_product")
                .and_then(|p| p.get("package"))
                .and_then(Value::as_str)
                .or_else(|| params.get("new_product_name").and_then(Value::as_str));
            match (account.and_then(|a| a.package.as_deref()), want) {
                (Some(have), Some(want)) => have == want,
                _ => false,
            }
        }
        _ => false,
    }
}

async fn call(
    engine: &Engine,
    module: &dyn Module,
    request: &ActionRequest,
) -> Result<ActionReply, ModuleError> {
    engine
        .call_module(module, request, engine.options.jobs.call_timeout)
        .await
}

/// Runs one job and says how it ended. Never fails: every problem becomes an outcome.
/// Runs one job and adds the event announcing its outcome, once it has one.
async fn execute(shared: &Shared, job: Job, pre: Option<Preloaded>) -> (JobUpdate, Option<bool>) {
    let mut seen = None;
    let (mut update, health) = run(shared, job.clone(), pre, &mut seen).await;
    if let Some(mut service) = seen {
        if let Some(c) = &update.service {
            apply_change(&mut service, c);
        }
        if let Some(e) = crate::events::outcome(
            &job,
            update.state,
            update.attempts,
            update.last_error.as_deref(),
            &service,
        ) {
            update.events.push(e);
        }
    }
    (update, health)
}

/// The service as the change will leave it, for the outcome's event.
fn apply_change(s: &mut provisio_core::service::Service, c: &ServiceChange) {
    if let Some(st) = c.status {
        s.status = st;
    }
    if let Some(susp) = &c.suspension {
        s.suspension = susp.clone();
    }
    if let Some(o) = &c.outputs {
        s.outputs = o.clone();
    }
    if let Some(p) = c.product_id {
        s.product_id = p;
    }
}

async fn run(
    shared: &Shared,
    job: Job,
    pre: Option<Preloaded>,
    seen: &mut Option<provisio_core::service::Service>,
) -> (JobUpdate, Option<bool>) {
    let engine = &shared.engine;
    let started = engine.now();
    let t0 = Instant::now();
    let attempt_no = job.attempts + 1;
    let mut update = JobUpdate {
        job_id: job.id,
        service_id: job.service_id,
        owner: shared.owner.clone(),
        state: JobState::Done,
        attempts: attempt_no,
        run_after: job.run_after,
        needs_lookup: false,
        last_error: None,
        error_kind: None,
        attempt: Attempt {
            job_id: job.id,
            attempt: attempt_no,
            started_at: started,
            duration_ms: 0,
            outcome: "ok".into(),
            message: None,
        },
        service: None,
        events: Vec::new(),
        handed_to: None,
    };
    let finish = |mut u: JobUpdate, outcome: &str, message: Option<String>| {
        u.attempt.duration_ms = t0.elapsed().as_millis() as i64;
        u.attempt.outcome = outcome.to_string();
        u.attempt.message = message.clone();
        if u.state != JobState::Done {
            u.last_error = message;
        }
        u
    };

    let loaded = match load(shared, &job, pre).await {
        Ok(l) => {
            *seen = Some(l.service.clone());
            l
        }
        Err(msg) => {
            // Records missing or unreadable: nothing was sent, so a later try is safe.
            return (
                retry_or_fail(engine, &job, update, ErrorKind::Transient, msg, finish),
                None,
            );
        }
    };
    if let Err(why) = check_transition(loaded.status, &job.action).or_else(|e| {
        // A transfer creates on the target and removes from the source while the service
        // stays active throughout.
        if transfer_step(&job).is_some() && loaded.status == ServiceStatus::Active {
            Ok(())
        } else {
            Err(e)
        }
    }) {
        update.state = JobState::Cancelled;
        return (finish(update, "cancelled", Some(why)), None);
    }
    let module = loaded.module.as_ref();
    if let Some(cap) = job.action.capability() {
        if !module.info().can(cap) {
            update.state = JobState::Failed;
            update.error_kind = Some(ErrorKind::Permanent);
            let msg = format!("module '{}' cannot {}", module.info().name, job.action);
            return (finish(update, "permanent", Some(msg)), None);
        }
    }
    // After an unknown outcome, ask the remote before acting again.
    if job.needs_lookup && module.info().can(provisio_core::module::Capability::Lookup) {
        let mut lookup = loaded.request.clone();
        lookup.action = Action::Lookup;
        match call(engine, module, &lookup).await {
            Ok(reply) => {
                if already_done(&job.action, reply.account.as_ref(), &loaded.request.params) {
                    // The lookup's outputs stand in for the lost reply's (a remote id, say).
                    update.service = Some(success_change(&job, &loaded, &reply, engine.now()));
                    return (
                        finish(
                            update,
                            "skipped",
                            Some("a lookup showed the action had already taken effect".into()),
                        ),
                        Some(true),
                    );
                }
            }
            Err(e) => {
                let msg = format!("lookup before retrying failed: {}", e.message);
                let mut u = retry_or_fail(engine, &job, update, ErrorKind::Unknown, msg, finish);
                u.needs_lookup = true;
                return (u, Some(e.kind == ErrorKind::Permanent));
            }
        }
    }

    match call(engine, module, &loaded.request).await {
        Ok(reply) => {
            update.service = Some(success_change(&job, &loaded, &reply, engine.now()));
            (finish(update, "ok", None), Some(true))
        }
        Err(e) => {
            let msg = e.message;
            let healthy = e.kind == ErrorKind::Permanent;
            let u = match e.kind {
                ErrorKind::Permanent => {
                    update.state = JobState::Failed;
                    update.error_kind = Some(ErrorKind::Permanent);
                    update.service = failure_change(&job);
                    finish(update, "permanent", Some(msg))
                }
                kind => retry_or_fail(engine, &job, update, kind, msg, finish),
            };
            (u, Some(healthy))
        }
    }
}

/// The outcome of an attempt that panicked before it had one: unknown (the module may
/// have been called), so the next attempt looks the account up first.
async fn panicked(shared: &Shared, job: &Job, why: String) -> JobUpdate {
    let attempt = job.attempts + 1;
    let update = JobUpdate {
        job_id: job.id,
        service_id: job.service_id,
        owner: shared.owner.clone(),
        state: JobState::Pending,
        attempts: attempt,
        run_after: job.run_after,
        needs_lookup: true,
        last_error: None,
        error_kind: None,
        attempt: Attempt {
            job_id: job.id,
            attempt,
            started_at: shared.engine.now(),
            duration_ms: 0,
            outcome: "unknown".into(),
            message: None,
        },
        service: None,
        events: Vec::new(),
        handed_to: None,
    };
    let finish = |mut u: JobUpdate, outcome: &str, message: Option<String>| {
        u.attempt.outcome = outcome.to_string();
        u.attempt.message = message.clone();
        if u.state != JobState::Done {
            u.last_error = message;
        }
        u
    };
    let mut update = retry_or_fail(
        &shared.engine,
        job,
        update,
        ErrorKind::Unknown,
        format!("the attempt panicked: {why}"),
        finish,
    );
    // A job that gave up is announced like any other that failed.
    if let Ok(Some(mut service)) = shared.engine.store.get_service(job.service_id).await {
        if let Some(c) = &update.service {
            apply_change(&mut service, c);
        }
        if let Some(e) = crate::events::outcome(
            job,
            update.state,
            update.attempts,
            update.last_error.as_deref(),
            &service,
        ) {
            update.events.push(e);
        }
    }
    update
}

/// A transient or unknown failure: try again after the schedule's delay, or park the job
/// when the attempts are used up.
fn retry_or_fail(
    engine: &Engine,
    job: &Job,
    mut u: JobUpdate,
    kind: ErrorKind,
    msg: String,
    finish: impl Fn(JobUpdate, &str, Option<String>) -> JobUpdate,
) -> JobUpdate {
    u.error_kind = Some(kind);
    u.needs_lookup = kind == ErrorKind::Unknown || job.needs_lookup;
    let delay = (u.attempts < job.max_attempts)
        .then(|| {
            engine
                .options
                .jobs
                .retry
                .delay_after(u.attempts, rand::random::<f64>())
        })
        .flatten();
    match delay {
        Some(d) => {
            u.state = JobState::Pending;
            u.run_after = engine.now() + chrono::Duration::from_std(d).unwrap_or_default();
        }
        None => {
            u.state = JobState::Failed;
            u.service = failure_change(job);
        }
    }
    finish(u, kind.as_str(), Some(msg))
}

/// A create that gave up leaves the service `failed`; other actions leave it as it was.
/// `Some("to")` for a transfer's create on the target, `Some("cleanup")` for its
/// terminate on the source.
fn transfer_step(job: &Job) -> Option<&'static str> {
    if job.params.get("transfer_to").is_some() {
        Some("to")
    } else if job.params.get("transfer_cleanup").is_some() {
        Some("cleanup")
    } else {
        None
    }
}

fn failure_change(job: &Job) -> Option<ServiceChange> {
    // A failed transfer leaves the service as it was, on its source.
    if transfer_step(job).is_some() {
        return None;
    }
    (job.action == Action::Create).then(|| ServiceChange {
        status: Some(ServiceStatus::Failed),
        ..Default::default()
    })
}

fn success_change(
    job: &Job,
    loaded: &Loaded,
    reply: &ActionReply,
    now: chrono::DateTime<Utc>,
) -> ServiceChange {
    let mut change = ServiceChange {
        status: status_after(&job.action),
        ..Default::default()
    };
    match transfer_step(job) {
        Some("to") => {
            // Now on the target; the source account goes only now that the target has it.
            change.status = None;
            change.server_id = Some(job.server_id);
            if let Some(from) = job.params.get("transfer_from").and_then(Value::as_i64) {
                let mut params = Settings::new();
                params.insert("transfer_cleanup".into(), Value::from(from));
                change.follow_up = Some(provisio_core::job::NewJob {
                    server_id: ServerId(from),
                    action: Action::Terminate,
                    params,
                    idempotency_key: crate::jobs::request::new_idempotency_key(),
                    max_attempts: job.max_attempts,
                    run_after: now,
                    // The clean-up is the second half of the transfer the person asked for.
                    trace_id: job.trace_id.unwrap_or_else(TraceId::random),
                });
            }
        }
        Some(_) => {
            change.status = None;
            return change;
        }
        None => {}
    }
    match &job.action {
        Action::Suspend => {
            let reason = job
                .params
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("admin");
            let until = job
                .params
                .get("until")
                .and_then(Value::as_str)
                .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
                .map(|d| d.with_timezone(&Utc));
            change.suspension = Some(Some(Suspension {
                reason: SuspendReason::from(reason.to_string()),
                since: now,
                until,
            }));
        }
        Action::Unsuspend | Action::Terminate => change.suspension = Some(None),
        Action::ChangePassword => {
            change.password = job.params.get("new_password").and_then(as_sealed);
        }
        Action::ChangePackage => {
            change.product_id = job
                .params
                .get("product_id")
                .and_then(Value::as_i64)
                .map(ProductId);
        }
        _ => {}
    }
    if !reply.outputs.is_empty() {
        let mut outputs = loaded.outputs.clone();
        for (k, v) in &reply.outputs {
            outputs.insert(k.clone(), v.clone());
        }
        change.outputs = Some(outputs);
        let copied: std::collections::BTreeMap<String, String> = loaded
            .client_fields
            .iter()
            .filter_map(|(field, output)| {
                let text = match reply.outputs.get(output)? {
                    // A sealed value is a secret: it never goes into a client field.
                    v if as_sealed(v).is_some() => return None,
                    Value::String(s) => s.clone(),
                    Value::Null => return None,
                    other => other.to_string(),
                };
                Some((field.clone(), text))
            })
            .collect();
        if !copied.is_empty() {
            change.client_fields = Some(copied);
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(package: Option<&str>) -> RemoteAccount {
        RemoteAccount {
            username: "u1".into(),
            status: Some("active".into()),
            package: package.map(String::from),
        }
    }

    fn params(v: Value) -> Settings {
        v.as_object().cloned().unwrap_or_default()
    }

    /// A package change whose answer was lost is not sent again once the account shows
    /// the new package (the chaos run found such changes applied twice).
    #[test]
    fn a_package_change_is_done_when_the_account_reports_the_new_package() {
        let by_setting =
            params(json!({"new_product": {"package": "pro-2"}, "new_product_name": "pro"}));
        let by_name = params(json!({"new_product": {}, "new_product_name": "pro"}));
        let cp = Action::ChangePackage;
        assert!(already_done(
            &cp,
            Some(&account(Some("pro-2"))),
            &by_setting
        ));
        // The `package` setting wins over the name, as in audits.
        assert!(!already_done(&cp, Some(&account(Some("pro"))), &by_setting));
        assert!(already_done(&cp, Some(&account(Some("pro"))), &by_name));
        assert!(!already_done(&cp, Some(&account(Some("basic"))), &by_name));
        // A remote that does not report packages tells nothing: the change is sent again.
        assert!(!already_done(&cp, Some(&account(None)), &by_name));
        assert!(!already_done(&cp, None, &by_name));
    }
}
