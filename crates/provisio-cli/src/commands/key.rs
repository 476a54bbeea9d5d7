//! `provisio key ...`: API keys, over the REST API with an admin key, or directly on the
//! database (`--database-url` or `--config`) to bootstrap access before any key exists.

use provisio_api::requests::KeyCreate;
use serde_json::Value;

use super::Ctx;
use crate::output::{self, col, Column};

#[derive(clap::Args, Debug, Clone)]
pub struct KeySpec {
    /// 1 to 100 of `a-z A-Z 0-9 . _ -`, unique among keys in use
    #[arg(long)]
    pub name: String,
    /// What the key may do
    #[arg(long, value_parser = ["admin", "operator", "billing", "readonly", "client", "reseller"])]
    pub role: String,
    /// The client a `client` key is held to
    #[arg(long)]
    pub client: Option<i64>,
    /// The reseller a `reseller` key is held to
    #[arg(long)]
    pub reseller: Option<i64>,
    /// For client keys: an action it may run (repeatable; service actions, login_url, usage);
    /// by default change_password, login_url and usage
    #[arg(long = "action", value_name = "ACTION")]
    pub actions: Vec<String>,
    /// Let the key read service passwords (not for readonly keys)
    #[arg(long)]
    pub reveal_secrets: bool,
    /// When the key stops working (RFC 3339, e.g. 2027-01-31T00:00:00Z)
    #[arg(long)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeySpec {
    /// The key to make, the same over the API and on the database.
    pub fn body(&self) -> anyhow::Result<KeyCreate> {
        Ok(KeyCreate {
            name: self.name.clone(),
            role: super::wire_name("--role", &self.role)?,
            client_id: self.client,
            reseller_id: self.reseller,
            actions: (!self.actions.is_empty()).then(|| self.actions.clone()),
            reveal_secrets: self.reveal_secrets,
            expires_at: self.expires_at,
        })
    }
}

pub const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("ROLE", "/role"),
    col("CLIENT", "/client_id"),
    col("RESELLER", "/reseller_id"),
    col("PREFIX", "/prefix"),
    col("LAST USED", "/last_used_at"),
    col("EXPIRES", "/expires_at").or("never"),
    col("REVOKED", "/revoked_at"),
];

/// Makes a key over the API and prints it alone on stdout: it is not shown again.
pub async fn create(ctx: &Ctx, spec: &KeySpec) -> anyhow::Result<()> {
    let made = ctx.api.create_key(&spec.body()?).await?;
    output::emit(&made.key)
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let keys = ctx.api.list_keys().await?;
    output::print_list(ctx.output, &keys, COLUMNS, "keys")
}

/// The id of the key in use called `name` (or with that id), among `keys` as listed.
pub fn live_key_id(keys: &[Value], name: &str) -> anyhow::Result<i64> {
    keys.iter()
        .filter(|k| k["revoked_at"].is_null())
        .find(|k| k["name"] == name || name.parse::<i64>().is_ok_and(|id| k["id"] == id))
        .and_then(|k| k["id"].as_i64())
        .ok_or_else(|| anyhow::anyhow!("no key in use named '{name}'"))
}

pub async fn revoke(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let keys = serde_json::to_value(ctx.api.list_keys().await?)?;
    let id = live_key_id(keys.as_array().map(Vec::as_slice).unwrap_or_default(), name)?;
    ctx.api.revoke_key(id).await?;
    output::emit(&format!("revoked key {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_spec_is_the_body_the_api_reads() {
        let spec = KeySpec {
            name: "portal-7".into(),
            role: "client".into(),
            client: Some(7),
            reseller: None,
            actions: vec!["login_url".into()],
            reveal_secrets: false,
            expires_at: None,
        };
        assert_eq!(
            serde_json::to_value(spec.body().unwrap()).unwrap(),
            json!({"name": "portal-7", "role": "client", "client_id": 7, "actions": ["login_url"]})
        );
        let bad = KeySpec {
            role: "root".into(),
            ..spec
        };
        assert!(bad
            .body()
            .unwrap_err()
            .to_string()
            .starts_with("--role \"root\""));
    }
}
