//! Products: what is sold, a module with settings, optionally extending a parent product.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::ProductId;
use crate::settings::Settings;
use crate::text::Handle;

/// When a new service's create action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoSetup {
    /// As soon as the service is ordered.
    #[default]
    OnOrder,
    /// When the order is accepted.
    OnAccept,
    /// Only when someone asks for it.
    Manual,
}

impl AutoSetup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnOrder => "on_order",
            Self::OnAccept => "on_accept",
            Self::Manual => "manual",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "on_order" => Some(Self::OnOrder),
            "on_accept" => Some(Self::OnAccept),
            "manual" => Some(Self::Manual),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: ProductId,
    pub name: Handle,
    pub module: String,
    /// The parent whose settings this product inherits where it does not override them.
    pub extends: Option<ProductId>,
    /// New services are placed on a server of this group (any server of the module if `None`).
    pub server_group: Option<Handle>,
    /// This product's own settings (overrides of the parent's); secret fields are sealed.
    pub settings: Settings,
    pub auto_setup: AutoSetup,
    /// Module outputs copied into the client's custom fields when an action succeeds:
    /// client field name → output name (e.g. `pass_key` → `pass_key`).
    pub client_fields: ClientFieldMap,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub name: Handle,
    pub module: String,
    pub extends: Option<ProductId>,
    pub server_group: Option<Handle>,
    pub settings: Settings,
    pub auto_setup: AutoSetup,
    pub client_fields: ClientFieldMap,
}

/// Client custom field name → module output name.
pub type ClientFieldMap = std::collections::BTreeMap<String, String>;

/// Why a chain of `extends` cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtendsError {
    #[error("extends would form a cycle: {0}")]
    Cycle(String),
    #[error("extends names product {0}, which does not exist")]
    Missing(ProductId),
    #[error("extends names product '{parent}' of module '{parent_module}', but this product uses module '{module}'")]
    ModuleMismatch {
        parent: String,
        parent_module: String,
        module: String,
    },
}

/// Merges settings along a chain, root first: each later map overrides the earlier ones
/// key by key; a JSON `null` override removes the inherited value.
pub fn merge_chain<'a>(chain: impl IntoIterator<Item = &'a Settings>) -> Settings {
    let mut out = Settings::new();
    for s in chain {
        for (k, v) in s {
            if v.is_null() {
                out.remove(k);
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Walks `extends` from `start` up to the root, using `lookup` to fetch parents, and returns
/// the chain root first. `start` itself is given as (id, name, module, extends, settings) so a
/// product not yet stored (or about to change) can be checked before it is written.
pub fn resolve_chain(
    start: &Product,
    mut lookup: impl FnMut(ProductId) -> Option<Product>,
) -> Result<Vec<Product>, ExtendsError> {
    let mut chain = vec![start.clone()];
    let mut seen = vec![start.id];
    let mut next = start.extends;
    while let Some(pid) = next {
        if seen.contains(&pid) {
            let names: Vec<String> = chain.iter().map(|p| p.name.to_string()).collect();
            return Err(ExtendsError::Cycle(format!(
                "{} -> {}",
                names.join(" -> "),
                chain
                    .iter()
                    .find(|p| p.id == pid)
                    .map(|p| p.name.to_string())
                    .unwrap_or_else(|| pid.to_string())
            )));
        }
        let parent = lookup(pid).ok_or(ExtendsError::Missing(pid))?;
        if parent.module != start.module {
            return Err(ExtendsError::ModuleMismatch {
                parent: parent.name.to_string(),
                parent_module: parent.module.clone(),
                module: start.module.clone(),
            });
        }
        seen.push(pid);
        next = parent.extends;
        chain.push(parent);
    }
    chain.reverse();
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn product(id: i64, name: &str, extends: Option<i64>, settings: serde_json::Value) -> Product {
        Product {
            id: ProductId(id),
            name: Handle::parse(name).unwrap(),
            module: "script".into(),
            extends: extends.map(ProductId),
            server_group: None,
            settings: settings.as_object().unwrap().clone(),
            auto_setup: AutoSetup::OnOrder,
            client_fields: Default::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn chain_merges_root_first_and_null_removes() {
        let base = product(1, "base", None, json!({"quota": 100, "ssh": true}));
        let plus = product(2, "plus", Some(1), json!({"quota": 500, "ssh": null}));
        let db: HashMap<_, _> = [(ProductId(1), base)].into_iter().collect();
        let chain = resolve_chain(&plus, |id| db.get(&id).cloned()).unwrap();
        let eff = merge_chain(chain.iter().map(|p| &p.settings));
        assert_eq!(serde_json::Value::Object(eff), json!({"quota": 500}));
    }

    #[test]
    fn cycles_and_missing_parents_are_refused() {
        let a = product(1, "a", Some(2), json!({}));
        let b = product(2, "b", Some(1), json!({}));
        let db: HashMap<_, _> = [(ProductId(1), a.clone()), (ProductId(2), b)]
            .into_iter()
            .collect();
        assert!(matches!(
            resolve_chain(&a, |id| db.get(&id).cloned()),
            Err(ExtendsError::Cycle(_))
        ));
        let lone = product(3, "c", Some(9), json!({}));
        assert_eq!(
            resolve_chain(&lone, |_| None),
            Err(ExtendsError::Missing(ProductId(9)))
        );
    }
}
