//! The secret keys as the database knows them: the start-up check that a node holds the
//! keys its database's secrets are sealed under, the loop that makes a running node seal
//! under the database's current key, and the rotation that re-seals every secret under a
//! new key.
//!
//! A rotation, step by step: every node's key file gets the new key beside the old one
//! (nodes are restarted one by one; they keep sealing under the current key, whichever line
//! holds it); the rotation marks the new key current and the old one retiring, so the nodes
//! switch within [`FOLLOW_EVERY`]; it then re-seals, batch by batch with compare-and-set,
//! every value not under the new key, in passes until a pass after the nodes have switched
//! finds nothing left, and marks the old key retired. Interrupted, it is simply run again:
//! it re-seals only what is not under the new key yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use provisio_core::secret::{Cipher, KeyId, Sealed, SecretError};
use provisio_store::{
    SealedCell, SealedColumn, SecretKeyRecord, SecretKeyState, Store, StoreError,
};

use crate::shutdown::Shutdown;
use crate::Engine;

/// How often a running node looks for a new current key.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// This node's keys do not fit the database: it must not start (or rotate).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refused(message: impl Into<String>) -> SecretKeyError {
    SecretKeyError::Refused(message.into())
}

/// What the start-up check found.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCheck {
    /// The key new values are sealed under.
    pub current: KeyId,
    /// Keys a rotation is moving away from (this node holds them).
    pub retiring: Vec<KeyId>,
    /// Keys this node holds that the database does not know yet: the target of a rotation.
    pub new: Vec<KeyId>,
    /// Keys this node holds that nothing is sealed under any more: they may be dropped.
    pub retired: Vec<KeyId>,
}

fn kid_of(record: &SecretKeyRecord) -> Result<KeyId, SecretKeyError> {
    KeyId::parse(&record.kid).ok_or_else(|| {
        refused(format!(
            "secret_keys holds a malformed key id {:?}",
            record.kid
        ))
    })
}

/// The sealed values of one cell.
fn sealed_of(cell: &SealedCell) -> Vec<Sealed> {
    match cell {
        SealedCell::Bytes(b) => vec![Sealed(b.clone())],
        SealedCell::Json(text) => serde_json::from_str(text)
            .map(|v| provisio_core::secret::sealed_in(&v))
            .unwrap_or_default(),
    }
}

/// Whether the database holds any sealed value or any key record: then a missing key file
/// must not be replaced by a new key.
pub async fn holds_secrets(store: &dyn Store) -> Result<bool, StoreError> {
    if !store.secret_keys().await?.is_empty() {
        return Ok(true);
    }
    for column in SealedColumn::ALL {
        if !store.sealed_cells(column, &[], 0, 1).await?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks `cipher` against the database and makes it seal under the database's current
/// key. On a database without key records (new, or from before key ids) it first makes
/// sure the keys open what is stored, then records the key as current.
pub async fn check(store: &dyn Store, cipher: &Cipher) -> Result<KeyCheck, SecretKeyError> {
    let mut records = store.secret_keys().await?;
    if records.is_empty() {
        let mut first = cipher.key_ids()[0];
        // Sealed values without a key record come from before key ids: one sample of every
        // kind must open, or this node was given another key than the one that sealed them.
        for column in SealedColumn::ALL {
            let cells = store.sealed_cells(column, &[], 0, 5).await?;
            for (id, cell) in &cells {
                for sealed in sealed_of(cell) {
                    match cipher.key_for(&sealed) {
                        Some(k) => first = k,
                        None => {
                            return Err(refused(format!(
                                "the secret key does not fit this database: the secret in {column} of row {id} cannot be opened with it; start this node with the key file the other nodes use"
                            )))
                        }
                    }
                }
            }
        }
        let check = cipher.check_value(first).expect("a key of the ring");
        records = store
            .record_first_secret_key(&first.to_string(), check)
            .await?;
    }
    let mut current = None;
    let mut retiring = Vec::new();
    let mut retired = Vec::new();
    for record in &records {
        let kid = kid_of(record)?;
        let held = cipher.check_value(kid);
        if held.is_some_and(|c| c != record.check_value) {
            return Err(refused(format!(
                "the check value of secret key {kid} differs from the database's; the key file holds another key under the same id"
            )));
        }
        match record.state {
            SecretKeyState::Current => {
                if held.is_none() {
                    return Err(refused(format!(
                        "the secrets in this database are sealed under secret key {kid}, which this node's key file does not hold: it was started with another key; give it the key file the other nodes use"
                    )));
                }
                current = Some(kid);
            }
            SecretKeyState::Retiring => {
                if held.is_none() {
                    return Err(refused(format!(
                        "a rotation away from secret key {kid} is under way: keep that key in the key file until `provisio key rotate-secret-key` has finished"
                    )));
                }
                retiring.push(kid);
            }
            SecretKeyState::Retired => {
                if held.is_some() {
                    retired.push(kid);
                }
            }
        }
    }
    let current = current.ok_or_else(|| refused("the database records no current secret key"))?;
    cipher.seal_under(current);
    let known: Vec<&str> = records.iter().map(|r| r.kid.as_str()).collect();
    let new = cipher
        .key_ids()
        .into_iter()
        .filter(|k| !known.contains(&k.to_string().as_str()))
        .collect();
    Ok(KeyCheck {
        current,
        retiring,
        new,
        retired,
    })
}

/// Makes `cipher` seal under the database's current key if it holds it. Returns the key it
/// now seals under, and whether the database's current key is one it lacks.
pub async fn follow(store: &dyn Store, cipher: &Cipher) -> Result<(KeyId, bool), StoreError> {
    let records = store.secret_keys().await?;
    let current = records
        .iter()
        .find(|r| r.state == SecretKeyState::Current)
        .and_then(|r| KeyId::parse(&r.kid));
    let mut lacking = false;
    if let Some(k) = current {
        if k != cipher.sealing_key() && !cipher.seal_under(k) {
            lacking = true;
        }
    }
    Ok((cipher.sealing_key(), lacking))
}

/// The loop of a running node that follows rotations.
pub(crate) async fn follow_loop(engine: Arc<Engine>, mut stop: Shutdown) {
    let mut warned = false;
    let pulse = engine.heartbeats().register("secret_key", FOLLOW_EVERY);
    loop {
        pulse.beat();
        let before = engine.cipher.sealing_key();
        match follow(engine.store.as_ref(), &engine.cipher).await {
            Ok((now, lacking)) => {
                if now != before {
                    tracing::info!(key = %now, "sealing new secrets under the rotated secret key");
                }
                if lacking && !warned {
                    tracing::error!(
                        key = %before,
                        "a secret key rotation is under way but this node's key file lacks the new key; it keeps sealing under the old one, and the rotation cannot finish until it is restarted with both"
                    );
                }
                warned = lacking;
            }
            Err(e) => tracing::warn!(error = %e, "reading the current secret key failed"),
        }
        if stop.sleep(FOLLOW_EVERY).await {
            return;
        }
    }
}

/// Follows rotations in a process that runs no worker (an API-only node, whose requests
/// seal secrets too); the task runs until aborted.
pub fn spawn_follow(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    let (keep, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Held for as long as the loop runs: a dropped sender reads as a stop.
        let _keep = keep;
        follow_loop(engine, Shutdown::new(rx)).await
    })
}

/// The pause between passes that still found something, so that writes under way can land.
const PASS_GAP: Duration = Duration::from_millis(100);

/// How a rotation goes.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Cells read and re-sealed per batch (one transaction each).
    pub batch: u32,
    /// How long after the switch every running node is sure to seal under the new key;
    /// only a pass begun after it that finds nothing left ends the rotation.
    pub settle: Duration,
    /// Passes after `settle` before giving up (a node that lacks the new key keeps sealing
    /// under the old).
    pub max_passes: u32,
}

impl Default for RotateOptions {
    fn default() -> Self {
        Self {
            batch: 200,
            settle: FOLLOW_EVERY * 2 + Duration::from_secs(1),
            max_passes: 20,
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    pub to: KeyId,
    /// Cells re-sealed (a settings object counts once, however many secrets it holds).
    pub resealed: u64,
    pub passes: u32,
    /// Keys that nothing is sealed under any more.
    pub retired: Vec<String>,
}

/// Re-seals every secret of the database under `to`, which `cipher` must hold along with
/// every key values are still sealed under. Safe to run while nodes serve, and to run again
/// after an interruption.
pub async fn rotate(
    store: &dyn Store,
    cipher: &Cipher,
    to: KeyId,
    options: &RotateOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Rotation, SecretKeyError> {
    let Some(check_value) = cipher.check_value(to) else {
        return Err(refused(format!(
            "the key file does not hold secret key {to}"
        )));
    };
    let found = check(store, cipher).await?;
    // Nothing to switch: a pass only checks (and re-seals stragglers), with no node to
    // wait for.
    let settled_already = found.current == to && found.retiring.is_empty();
    store
        .begin_secret_key_rotation(&to.to_string(), check_value)
        .await?;
    cipher.seal_under(to);
    let switched = Instant::now();
    let mut retiring: Vec<String> = store
        .secret_keys()
        .await?
        .into_iter()
        .filter(|r| r.state == SecretKeyState::Retiring)
        .map(|r| r.kid)
        .collect();
    retiring.sort();
    if found.current == to && !found.retiring.is_empty() {
        progress(&format!("resuming the rotation to secret key {to}"));
    }
    let mut resealed = 0;
    let mut passes = 0;
    let mut settled_passes = 0;
    // One empty pass proves little: a lagging node's next write may be a moment away. The
    // rotation ends only when passes have found nothing for a whole settle time.
    let mut quiet_since: Option<std::time::Instant> = None;
    loop {
        passes += 1;
        let started_settled = settled_already || switched.elapsed() >= options.settle;
        let (found, done) = pass(store, cipher, options.batch).await?;
        resealed += done;
        progress(&format!(
            "pass {passes}: re-sealed {done} cells under secret key {to}"
        ));
        if found == 0 && started_settled {
            // A finished rotation checked again has no straggler to wait for.
            let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
            if settled_already || since.elapsed() >= options.settle {
                break;
            }
            tokio::time::sleep(PASS_GAP).await;
            continue;
        }
        quiet_since = None;
        let wait = if started_settled {
            // Only passes after the nodes have switched count: before, lagging nodes
            // sealing under the old key are expected.
            settled_passes += 1;
            if settled_passes >= options.max_passes {
                return Err(refused(format!(
                    "values are still being sealed under the old secret key after {settled_passes} passes: a node whose key file lacks key {to} is running; restart it with both keys and run the rotation again"
                )));
            }
            PASS_GAP
        } else {
            let left = options.settle.saturating_sub(switched.elapsed());
            if found == 0 {
                left
            } else {
                left.min(PASS_GAP)
            }
        };
        tokio::time::sleep(wait).await;
    }
    store.retire_secret_keys().await?;
    Ok(Rotation {
        to,
        resealed,
        passes,
        retired: retiring,
    })
}

/// One pass over every sealed column. Returns how many cells were found holding values not
/// under the sealing key, and how many of them were re-sealed.
async fn pass(
    store: &dyn Store,
    cipher: &Cipher,
    batch: u32,
) -> Result<(u64, u64), SecretKeyError> {
    let to = cipher.sealing_key();
    let mut prefix = vec![2u8];
    prefix.extend_from_slice(&to.0);
    let mut found = 0;
    let mut resealed = 0;
    for column in SealedColumn::ALL {
        let mut after = 0;
        loop {
            let cells = store.sealed_cells(column, &prefix, after, batch).await?;
            let Some((last, _)) = cells.last() else { break };
            after = *last;
            let full = cells.len() == batch as usize;
            let mut rewrites = Vec::new();
            for (id, cell) in cells {
                let cannot = |e: SecretError| {
                    refused(format!(
                        "the secret in {column} of row {id} cannot be re-sealed: {e}"
                    ))
                };
                let new = match &cell {
                    SealedCell::Bytes(b) => {
                        match cipher.reseal(&Sealed(b.clone())).map_err(cannot)? {
                            Some(new) => SealedCell::Bytes(new.0),
                            None => continue,
                        }
                    }
                    SealedCell::Json(text) => {
                        let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                            refused(format!("{column} of row {id} is not JSON: {e}"))
                        })?;
                        if !cipher.reseal_markers(&mut v).map_err(cannot)? {
                            continue;
                        }
                        SealedCell::Json(v.to_string())
                    }
                };
                rewrites.push((id, cell, new));
            }
            if !rewrites.is_empty() {
                found += rewrites.len() as u64;
                // A cell changed since it was read is not written (someone else wrote it);
                // the next pass looks at it again.
                resealed += store.replace_sealed(column, &rewrites).await?;
            }
            if !full {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok((found, resealed))
}

impl Engine {
    /// The cipher's key ring, for the start-up check and rotations run in this process.
    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }
}
