//! API keys and resellers: keys are generated with 256 bits of randomness, shown once and
//! stored only as a SHA-256 hash; each has a role, and a client or reseller key its scope.
//!
//! A fast hash is right here (unlike for passwords): the key is random, not chosen by a
//! person, so there is nothing to guess, and every request must verify it cheaply.

use provisio_core::access::{Reseller, ResellerStatus, Role, Scope, NON_ACTION_GRANTS};
use provisio_core::page::{Page, PageRequest};
use provisio_core::text::DisplayName;
use provisio_core::ResellerId;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use provisio_store::{ApiKey, NewApiKey, Store};

use crate::error::{not_found, Problems};
use crate::{Engine, Result};

const KEY_PREFIX: &str = "pvo_";

/// A newly made key: the secret itself (to show once) and the stored record.
pub struct NewKey {
    pub key: SecretString,
    pub record: ApiKey,
}

// The bodies are the API's wire types, defined once in `provisio-api`.
pub use provisio_api::requests::{KeyCreate, ResellerInput};

pub fn hash_key(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn generate() -> SecretString {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    SecretString::from(format!("{KEY_PREFIX}{hex}"))
}

/// Checks `input` and makes the key. A free function so that `provisio key create` can
/// bootstrap access with only the database at hand.
pub async fn create_api_key(store: &dyn Store, input: &KeyCreate) -> Result<NewKey> {
    let mut p = Problems::default();
    p.take("name", provisio_core::text::Handle::parse(&input.name));
    let scope = match (input.role, input.client_id, input.reseller_id) {
        (Role::Client, Some(c), None) => {
            let c = provisio_core::ClientId(c);
            if store.get_client(c).await?.is_none() {
                p.push("client_id", "exists", format!("no client {c}"));
            }
            Some(Scope::Client(c))
        }
        (Role::Reseller, None, Some(r)) => {
            let r = ResellerId(r);
            if store.get_reseller(r).await?.is_none() {
                p.push("reseller_id", "exists", format!("no reseller {r}"));
            }
            Some(Scope::Reseller(r))
        }
        (Role::Client, _, _) => {
            p.push(
                "client_id",
                "required",
                "a client key names its client (and no reseller)",
            );
            None
        }
        (Role::Reseller, _, _) => {
            p.push(
                "reseller_id",
                "required",
                "a reseller key names its reseller (and no client)",
            );
            None
        }
        (_, c, r) => {
            if c.is_some() {
                p.push(
                    "client_id",
                    "not_applicable",
                    "only client keys are held to a client",
                );
            }
            if r.is_some() {
                p.push(
                    "reseller_id",
                    "not_applicable",
                    "only reseller keys are held to a reseller",
                );
            }
            None
        }
    };
    if let Some(actions) = &input.actions {
        if input.role != Role::Client {
            p.push(
                "actions",
                "not_applicable",
                "only client keys name their actions; other roles' rights come with the role",
            );
        }
        for (i, a) in actions.iter().enumerate() {
            let known = NON_ACTION_GRANTS.contains(&a.as_str())
                || provisio_core::module::Action::parse(a).is_ok_and(|x| x.is_service_action());
            if !known {
                p.push(
                    &format!("actions[{i}]"),
                    "one_of",
                    format!("'{a}' is not a service action, login_url or usage"),
                );
            }
        }
        if actions.len() > 64 {
            p.push("actions", "length", "at most 64 actions");
        }
    }
    if input.reveal_secrets && input.role == Role::Readonly {
        p.push(
            "reveal_secrets",
            "not_applicable",
            "a readonly key never reads secrets",
        );
    }
    if input.expires_at.is_some_and(|t| t <= store.clock().now()) {
        p.push("expires_at", "future", "must be in the future");
    }
    p.finish()?;
    let key = generate();
    let exposed = key.expose_secret();
    let mut actions = input.actions.clone();
    if let Some(a) = &mut actions {
        a.sort();
        a.dedup();
    }
    let record = store
        .insert_api_key(&NewApiKey {
            name: input.name.clone(),
            prefix: exposed[..KEY_PREFIX.len() + 6].to_string(),
            hash: hash_key(exposed),
            role: input.role,
            scope,
            actions,
            reveal_secrets: input.reveal_secrets,
            expires_at: input.expires_at,
        })
        .await?;
    Ok(NewKey { key, record })
}

/// Why a presented key was not accepted; said to the caller without repeating the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Revoked,
    Expired,
    ResellerSuspended,
}

impl KeyRefusal {
    pub fn message(self) -> &'static str {
        match self {
            KeyRefusal::Unknown => "the API key is not valid",
            KeyRefusal::Revoked => "the API key has been revoked",
            KeyRefusal::Expired => "the API key has expired",
            KeyRefusal::ResellerSuspended => "the API key's reseller is suspended",
        }
    }
}

impl Engine {
    pub async fn create_api_key(&self, input: &KeyCreate) -> Result<NewKey> {
        create_api_key(self.store.as_ref(), input).await
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.store.list_api_keys().await?)
    }

    /// Revokes a key: its next request fails. Revoking twice is not an error.
    pub async fn revoke_api_key(&self, id: i64) -> Result<ApiKey> {
        self.store
            .revoke_api_key(id, self.now())
            .await?
            .ok_or_else(|| not_found("key", id))
    }

    /// The live key record a presented key belongs to; records when it was last used.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<std::result::Result<ApiKey, KeyRefusal>> {
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 200 {
            return Ok(Err(KeyRefusal::Unknown));
        }
        let hash = hash_key(presented);
        let seen = self.catalog_now().await?;
        let k = match self.catalog.get(seen, |c| c.keys.get(&hash).cloned()) {
            Some(k) => k,
            None => {
                // Unknown keys are not kept: anyone can present as many of those as they like.
                let Some(k) = self.store.find_api_key(&hash).await? else {
                    return Ok(Err(KeyRefusal::Unknown));
                };
                self.catalog.put(seen, |c| {
                    c.keys.insert(hash.clone(), k.clone());
                });
                k
            }
        };
        let touched = self.still_live(k).await?;
        if let Ok(k) = &touched {
            if let Some(at) = k.last_used_at {
                self.catalog.note_used(&hash, at);
            }
        }
        Ok(touched)
    }

    /// The live key record of the key with this id (a console session's), refused for the
    /// same reasons as a presented key: a key revoked or expired since sign-in stops working.
    pub async fn authenticate_id(
        &self,
        id: i64,
    ) -> Result<std::result::Result<ApiKey, KeyRefusal>> {
        let Some(k) = self.store.get_api_key(id).await? else {
            return Ok(Err(KeyRefusal::Unknown));
        };
        self.still_live(k).await
    }

    async fn still_live(&self, k: ApiKey) -> Result<std::result::Result<ApiKey, KeyRefusal>> {
        let now = self.now();
        if k.revoked_at.is_some() {
            return Ok(Err(KeyRefusal::Revoked));
        }
        if !k.is_live(now) {
            return Ok(Err(KeyRefusal::Expired));
        }
        if let Some(Scope::Reseller(r)) = k.scope {
            let seen = self.catalog_now().await?;
            let reseller = match self.catalog.get(seen, |c| c.resellers.get(&r).cloned()) {
                Some(found) => found,
                None => {
                    let found = self.store.get_reseller(r).await?;
                    self.catalog.put(seen, |c| {
                        c.resellers.insert(r, found.clone());
                    });
                    found
                }
            };
            let live = reseller.is_some_and(|r| r.status == ResellerStatus::Active);
            if !live {
                return Ok(Err(KeyRefusal::ResellerSuspended));
            }
        }
        // Writing on every request would make reads write; a minute's precision is enough.
        let mut k = k;
        if k.last_used_at
            .is_none_or(|t| now - t > chrono::Duration::seconds(60))
        {
            self.store.touch_api_key(k.id, now).await?;
            k.last_used_at = Some(now);
        }
        Ok(Ok(k))
    }

    pub async fn create_reseller(&self, input: ResellerInput) -> Result<Reseller> {
        let mut p = Problems::default();
        let name = match &input.name {
            Some(n) => p.take("name", DisplayName::parse(n)),
            None => {
                p.push("name", "required", "is required");
                None
            }
        };
        p.finish()?;
        Ok(self
            .store
            .insert_reseller(
                &name.expect("checked"),
                input.status.unwrap_or(ResellerStatus::Active),
            )
            .await?)
    }

    pub async fn get_reseller(&self, id: ResellerId) -> Result<Reseller> {
        self.store
            .get_reseller(id)
            .await?
            .ok_or_else(|| not_found("reseller", id))
    }

    pub async fn update_reseller(&self, id: ResellerId, input: ResellerInput) -> Result<Reseller> {
        let mut r = self.get_reseller(id).await?;
        let mut p = Problems::default();
        if let Some(n) = &input.name {
            if let Some(n) = p.take("name", DisplayName::parse(n)) {
                r.name = n;
            }
        }
        p.finish()?;
        if let Some(s) = input.status {
            r.status = s;
        }
        Ok(self.store.update_reseller(&r).await?)
    }

    pub async fn list_resellers(&self, page: PageRequest) -> Result<Page<Reseller>> {
        Ok(self.store.list_resellers(page).await?)
    }
}
