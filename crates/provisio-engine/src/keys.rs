//! API keys: generated with 256 bits of randomness, shown once, stored only as a SHA-256 hash.
//!
//! A fast hash is right here (unlike for passwords): the key is random, not chosen by a
//! person, so there is nothing to guess, and every request must verify it cheaply.

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use provisio_store::Store;

use crate::error::Problems;
use crate::{Engine, Result};

const KEY_PREFIX: &str = "pvo_";

/// A newly made key: the secret itself (to show once) and the stored record.
pub struct NewKey {
    pub key: SecretString,
    pub record: provisio_store::ApiKey,
}

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

/// Creates a key named `name` (1 to 100 of `a-z A-Z 0-9 . _ -`). A free function so that
/// `provisio key create` can bootstrap access with only the database at hand.
pub async fn create_api_key(store: &dyn Store, name: &str) -> Result<NewKey> {
    let mut p = Problems::default();
    p.take("name", provisio_core::text::Handle::parse(name));
    p.finish()?;
    let key = generate();
    let exposed = key.expose_secret();
    let record = store
        .insert_api_key(name, &exposed[..KEY_PREFIX.len() + 6], &hash_key(exposed))
        .await?;
    Ok(NewKey { key, record })
}

impl Engine {
    pub async fn create_api_key(&self, name: &str) -> Result<NewKey> {
        create_api_key(self.store.as_ref(), name).await
    }

    /// The key record a presented key belongs to, if any; records when it was last used.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<provisio_store::ApiKey>> {
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 200 {
            return Ok(None);
        }
        let found = self.store.find_api_key(&hash_key(presented)).await?;
        if let Some(k) = &found {
            let now = chrono::Utc::now();
            // Writing on every request would make reads write; a minute's precision is enough.
            if k.last_used_at
                .is_none_or(|t| now - t > chrono::Duration::seconds(60))
            {
                self.store.touch_api_key(k.id, now).await?;
            }
        }
        Ok(found)
    }
}
