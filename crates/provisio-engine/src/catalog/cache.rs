//! The records nearly every request reads (API keys, resellers, products, servers, gates)
//! kept in memory, each use checked against the store's catalog generation (migration
//! 0017), so that no copy older than a committed change is ever used, whichever process
//! made the change.
//!
//! Why it is safe: the counter is bumped in the transaction of every change to those
//! records. A caller reads it only through a read that *began after the caller arrived*,
//! and a copy is used only when it was fetched after a reading of the same value. A change
//! committed before the caller arrived has therefore either moved the counter past the
//! copy's value (the copy is dropped) or was already committed when the copy was fetched.
//!
//! Why it is cheap: one small read a request instead of one per record, and concurrent
//! callers share one read (any read that began after a caller arrived answers it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use provisio_core::access::Reseller;
use provisio_core::handler::Handler;
use provisio_core::product::Product;
use provisio_core::server::Server;
use provisio_core::{ProductId, ResellerId, ServerId};
use provisio_store::{ApiKey, Store};

use crate::Result;

/// Copies are dropped past this many keys, so a flood of distinct valid keys stays bounded.
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub(crate) struct CatalogCache {
    /// Generation reads begun so far. A read whose number is at least the count a caller
    /// saw when it arrived began after it arrived.
    begun: AtomicU64,
    /// Held by the one caller whose read is in flight.
    reading: tokio::sync::Mutex<()>,
    /// Signalled when a read ends (answered, failed or cancelled).
    ended: tokio::sync::Notify,
    /// The latest read: its number and the generation it read.
    last: Mutex<Option<(u64, i64)>>,
    copies: Mutex<Copies>,
}

/// Copies fetched after the counter read `generation`.
#[derive(Default)]
pub(crate) struct Copies {
    generation: i64,
    pub keys: HashMap<String, ApiKey>,
    pub resellers: HashMap<ResellerId, Option<Reseller>>,
    pub products_by_id: HashMap<ProductId, Product>,
    pub products_by_name: HashMap<String, Product>,
    pub servers_by_id: HashMap<ServerId, Server>,
    pub servers_by_name: HashMap<String, Server>,
    /// The enabled servers of a module (and group), for placement.
    pub placement: HashMap<(String, Option<String>), Vec<Server>>,
    /// The enabled gate handlers.
    pub gates: Option<Vec<Handler>>,
}

/// Ends a read: the next waiting caller may read, and every waiter looks at the answer.
struct ReadEnds<'a>(&'a tokio::sync::Notify);

impl Drop for ReadEnds<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

impl CatalogCache {
    /// The catalog generation, from a read that began after this call did.
    pub(crate) async fn generation(&self, store: &dyn Store) -> Result<i64> {
        let ticket = self.begun.load(Ordering::SeqCst);
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an end between the look and the wait is heard.
            ended.as_mut().enable();
            if let Some(n) = self.answered(ticket) {
                return Ok(n);
            }
            let Ok(turn) = self.reading.try_lock() else {
                ended.await;
                continue;
            };
            if let Some(n) = self.answered(ticket) {
                return Ok(n);
            }
            let _ends = ReadEnds(&self.ended);
            let number = self.begun.fetch_add(1, Ordering::SeqCst);
            let n = store.catalog_generation().await?;
            {
                let mut last = self.last.lock().expect("not poisoned");
                if last.is_none_or(|(m, _)| m < number) {
                    *last = Some((number, n));
                }
            }
            drop(turn);
            return Ok(n);
        }
    }

    fn answered(&self, ticket: u64) -> Option<i64> {
        self.last
            .lock()
            .expect("not poisoned")
            .filter(|(number, _)| *number >= ticket)
            .map(|(_, n)| n)
    }

    /// Looks in the copies made at `generation`; copies of an older one are dropped first.
    pub(crate) fn get<T>(
        &self,
        generation: i64,
        look: impl FnOnce(&Copies) -> Option<T>,
    ) -> Option<T> {
        let mut copies = self.copies.lock().expect("not poisoned");
        if !copies.at(generation) {
            return None;
        }
        look(&copies)
    }

    /// Keeps what was fetched after the counter read `generation`, unless the copies are
    /// already at a later one (the counter only grows).
    pub(crate) fn put(&self, generation: i64, keep: impl FnOnce(&mut Copies)) {
        let mut copies = self.copies.lock().expect("not poisoned");
        if copies.at(generation) {
            if copies.keys.len() >= MAX_KEYS {
                copies.keys.clear();
            }
            keep(&mut copies);
        }
    }

    /// A key's last use, written by this node: kept in its copy so the next minute's
    /// requests do not write it again.
    pub(crate) fn note_used(&self, hash: &str, at: chrono::DateTime<chrono::Utc>) {
        let mut copies = self.copies.lock().expect("not poisoned");
        if let Some(k) = copies.keys.get_mut(hash) {
            k.last_used_at = Some(at);
        }
    }
}

impl Copies {
    /// Whether these copies may serve a caller that read `generation`; moves to a later
    /// generation by dropping everything.
    fn at(&mut self, generation: i64) -> bool {
        if generation > self.generation {
            *self = Copies {
                generation,
                ..Default::default()
            };
        }
        generation == self.generation
    }
}

tokio::task_local! {
    /// The generation a request read when it began: every record it reads from the copies
    /// is as of then, as if it had read them all at its start.
    static SEEN: i64;
}

/// `f` with the generation the current task read, for work a request spawns.
pub fn inherit<F: std::future::Future>(f: F) -> impl std::future::Future<Output = F::Output> {
    let seen = SEEN.try_with(|n| *n).ok();
    async move {
        match seen {
            Some(n) => SEEN.scope(n, f).await,
            None => f.await,
        }
    }
}

impl crate::Engine {
    /// Runs `f` (a request) with one reading of the catalog generation, which every copy it
    /// uses is checked against.
    pub async fn with_catalog<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        let n = self.catalog.generation(self.store.as_ref()).await?;
        Ok(SEEN.scope(n, f).await)
    }

    /// The generation the current request read, or a fresh reading outside one.
    pub(crate) async fn catalog_now(&self) -> Result<i64> {
        match SEEN.try_with(|n| *n) {
            Ok(n) => Ok(n),
            Err(_) => self.catalog.generation(self.store.as_ref()).await,
        }
    }
}
