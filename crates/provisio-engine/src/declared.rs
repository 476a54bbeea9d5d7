//! Servers and products declared in the config file, applied at start: each is created, or
//! updated to match when one of that name exists, with the same validation as the API.

use serde::Deserialize;

use crate::input::{ProductCreate, ProductPatch, RecordRef, ServerCreate, ServerPatch};
use crate::patch::Patch;
use crate::{Engine, EngineError};

/// The `[[servers]]` and `[[products]]` entries of a config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    #[serde(default)]
    pub servers: Vec<ServerCreate>,
    #[serde(default)]
    pub products: Vec<ProductCreate>,
    #[serde(default)]
    pub handlers: Vec<crate::HandlerCreate>,
    #[serde(default)]
    pub rules: Vec<crate::RuleCreate>,
}

/// A declared entry that could not be applied; `entry` names it as the config file does.
#[derive(Debug, thiserror::Error)]
#[error("{entry}: {source}")]
pub struct DeclaredError {
    pub entry: String,
    #[source]
    pub source: EngineError,
}

/// How many declared entries were created and updated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
}

/// Settings in a declaration are the whole desired state: keys not declared are removed.
fn replace_settings(
    current: &provisio_core::settings::Settings,
    wanted: &provisio_core::settings::Settings,
) -> provisio_core::settings::Settings {
    let mut patch = wanted.clone();
    for k in current.keys() {
        if !wanted.contains_key(k) {
            patch.insert(k.clone(), serde_json::Value::Null);
        }
    }
    patch
}

impl Engine {
    pub async fn apply_declared(&self, d: &Declared) -> Result<Applied, DeclaredError> {
        let mut applied = Applied::default();
        for (i, s) in d.servers.iter().enumerate() {
            let entry = format!("servers[{i}] ('{}')", s.name);
            let wrap = |source| DeclaredError {
                entry: entry.clone(),
                source,
            };
            match self
                .store
                .get_server_by_name(&s.name)
                .await
                .map_err(|e| wrap(e.into()))?
            {
                None => {
                    self.create_server(s.clone()).await.map_err(wrap)?;
                    applied.created += 1;
                }
                Some(existing) => {
                    if existing.module != s.module {
                        return Err(wrap(EngineError::Conflict {
                            field: Some("module".into()),
                            message: format!(
                                "server exists with module '{}'; a server's module cannot change",
                                existing.module
                            ),
                        }));
                    }
                    let patch = ServerPatch {
                        name: None,
                        group: Some(s.group.clone().unwrap_or_else(|| "default".into())),
                        settings: Some(replace_settings(&existing.settings, &s.settings)),
                        max_concurrent: s
                            .max_concurrent
                            .or(Some(provisio_core::server::DEFAULT_MAX_CONCURRENT)),
                        max_per_second: match s.max_per_second {
                            Some(v) => Patch::Set(v),
                            None => Patch::Clear,
                        },
                        enabled: Some(s.enabled.unwrap_or(true)),
                    };
                    self.update_server(&RecordRef::Id(existing.id.0), patch)
                        .await
                        .map_err(wrap)?;
                    applied.updated += 1;
                }
            }
        }
        // Parents before children, so `extends` can name a product declared later in the file.
        let mut order: Vec<usize> = Vec::with_capacity(d.products.len());
        let mut pending: Vec<usize> = (0..d.products.len()).collect();
        while !pending.is_empty() {
            let waiting = |i: usize, pending: &[usize]| {
                d.products[i].extends.as_ref().is_some_and(|parent| {
                    pending
                        .iter()
                        .any(|&j| j != i && &d.products[j].name == parent)
                })
            };
            let ready: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|&i| !waiting(i, &pending))
                .collect();
            if ready.is_empty() {
                // A cycle among declared products: applying in file order lets the engine
                // name it.
                order.append(&mut pending);
            } else {
                pending.retain(|i| !ready.contains(i));
                order.extend(ready);
            }
        }
        for i in order {
            let p = &d.products[i];
            let entry = format!("products[{i}] ('{}')", p.name);
            let wrap = |source| DeclaredError {
                entry: entry.clone(),
                source,
            };
            match self
                .store
                .get_product_by_name(&p.name)
                .await
                .map_err(|e| wrap(e.into()))?
            {
                None => {
                    self.create_product(p.clone()).await.map_err(wrap)?;
                    applied.created += 1;
                }
                Some(existing) => {
                    if existing.module != p.module {
                        return Err(wrap(EngineError::Conflict {
                            field: Some("module".into()),
                            message: format!(
                                "product exists with module '{}'; a product's module cannot change",
                                existing.module
                            ),
                        }));
                    }
                    let patch = ProductPatch {
                        name: None,
                        extends: p.extends.clone().map_or(Patch::Clear, Patch::Set),
                        server_group: p.server_group.clone().map_or(Patch::Clear, Patch::Set),
                        settings: Some(replace_settings(&existing.settings, &p.settings)),
                        auto_setup: Some(p.auto_setup.unwrap_or_default()),
                        client_fields: Some(p.client_fields.clone().unwrap_or_default()),
                    };
                    self.update_product(&RecordRef::Id(existing.id.0), patch)
                        .await
                        .map_err(wrap)?;
                    applied.updated += 1;
                }
            }
        }
        for (i, h) in d.handlers.iter().enumerate() {
            let entry = format!("handlers[{i}] ('{}')", h.name);
            let wrap = |source| DeclaredError {
                entry: entry.clone(),
                source,
            };
            match self
                .store
                .get_handler_by_name(&h.name)
                .await
                .map_err(|e| wrap(e.into()))?
            {
                None => {
                    self.create_handler(h.clone()).await.map_err(wrap)?;
                    applied.created += 1;
                }
                Some(existing) => {
                    if existing.kind != h.kind || existing.phase != h.phase {
                        return Err(wrap(EngineError::Conflict {
                            field: Some("kind".into()),
                            message: format!(
                                "handler exists as a {} {} handler; kind and phase cannot change",
                                existing.kind.as_str(),
                                existing.phase.as_str()
                            ),
                        }));
                    }
                    // The secret is left alone: it is rotated on purpose, not by a restart.
                    let patch = crate::HandlerPatch {
                        name: None,
                        url: h.url.clone(),
                        script: h.script.clone(),
                        email: h.email.clone(),
                        events: Some(h.events.clone()),
                        status: Some(h.status.unwrap_or_default()),
                        timeout_ms: h.timeout_ms,
                        order: Some(h.order.unwrap_or(0)),
                        on_error: h.on_error,
                        disable_after_secs: h.disable_after_secs,
                    };
                    self.update_handler(&RecordRef::Id(existing.id.0), patch)
                        .await
                        .map_err(wrap)?;
                    applied.updated += 1;
                }
            }
        }
        for (i, r) in d.rules.iter().enumerate() {
            let entry = format!("rules[{i}] ('{}')", r.name);
            let wrap = |source| DeclaredError {
                entry: entry.clone(),
                source,
            };
            match self
                .store
                .get_rule_by_name(&r.name)
                .await
                .map_err(|e| wrap(e.into()))?
            {
                None => {
                    self.create_rule(r.clone()).await.map_err(wrap)?;
                    applied.created += 1;
                }
                Some(existing) => {
                    let patch = crate::RulePatch {
                        name: None,
                        on: Some(r.on.clone()),
                        action: Some(r.action.clone()),
                        delay_secs: Some(r.delay_secs.unwrap_or(0)),
                        enabled: Some(r.enabled.unwrap_or(true)),
                    };
                    self.update_rule(&RecordRef::Id(existing.id.0), patch)
                        .await
                        .map_err(wrap)?;
                    applied.updated += 1;
                }
            }
        }
        Ok(applied)
    }
}
