//! The products pages: every product with its `extends` chain and effective settings, and a
//! product's own page with each level's settings beside the merged result, secrets masked.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_core::page::PageRequest;
use provisio_core::settings::Settings;
use provisio_engine::input::RecordRef;
use provisio_store::ProductFilter;

use super::{show, when};
use crate::console::{page, ConsoleState, PageResult, Session};

/// What a masked setting shows instead of its value.
const MASKED: &str = "•••••• (secret)";

/// Settings as `(name, shown value)`, secrets masked: sealed values, and any name the
/// module's product schema counts as secret, in case one was ever stored unsealed.
fn shown(
    settings: &Settings,
    schema: Option<&provisio_core::settings::SettingsSchema>,
) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| {
            let secret = provisio_core::secret::as_sealed(v).is_some()
                || schema.is_some_and(|s| s.is_secret_name(k));
            let text = if secret { MASKED.to_string() } else { show(v) };
            (k.clone(), text)
        })
        .collect()
}

struct Row {
    id: i64,
    name: String,
    module: String,
    chain: String,
    effective: String,
}

#[derive(Template)]
#[template(path = "console/products.html")]
struct Products {
    rows: Vec<Row>,
    may_edit: bool,
}

pub(crate) async fn products(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/products")?;
    let may_edit = s.may(Method::PATCH, "/v1/products/{product}");
    let engine = &state.app.engine;
    let found = engine
        .list_products(
            &ProductFilter::default(),
            PageRequest::first(PageRequest::MAX_LIMIT),
        )
        .await?;
    let names: std::collections::HashMap<i64, (String, Option<i64>)> = found
        .items
        .iter()
        .map(|p| {
            (
                p.product.id.0,
                (p.product.name.to_string(), p.product.extends.map(|e| e.0)),
            )
        })
        .collect();
    let rows = found
        .items
        .iter()
        .map(|p| {
            // The chain from the product up to its root, as the listing names them; a
            // parent outside this page of the listing ends the walk.
            let mut chain = vec![p.product.name.to_string()];
            let mut at = p.product.extends.map(|e| e.0);
            while let Some(id) = at {
                let Some((n, up)) = names.get(&id) else { break };
                if chain.len() > 32 {
                    break;
                }
                chain.push(n.clone());
                at = *up;
            }
            let schema = engine
                .modules()
                .info(&p.product.module)
                .map(|i| &i.product_schema);
            Row {
                id: p.product.id.0,
                name: p.product.name.to_string(),
                module: p.product.module.clone(),
                chain: chain.join(" → "),
                effective: shown(&p.effective, schema)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect();
    page(
        &s,
        &headers,
        "/console/products",
        "Products",
        Products { rows, may_edit },
    )
}

struct Level {
    /// 0 for the root.
    depth: usize,
    id: i64,
    name: String,
    settings: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console/product.html")]
struct ProductPage {
    name: String,
    module: String,
    server_group: String,
    auto_setup: String,
    updated: String,
    /// The product's edit form, when the key may change it.
    edit: Option<String>,
    /// Root first, the product itself last.
    levels: Vec<Level>,
    /// `(name, value, where it comes from)`.
    effective: Vec<(String, String, String)>,
}

pub(crate) async fn product(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/products/{product}")?;
    let engine = &state.app.engine;
    let (view, chain) = engine.product_chain(&RecordRef::from_segment(&id)).await?;
    let schema = engine
        .modules()
        .info(&view.product.module)
        .map(|i| &i.product_schema);
    let levels = chain
        .iter()
        .enumerate()
        .map(|(depth, p)| Level {
            depth,
            id: p.id.0,
            name: p.name.to_string(),
            settings: shown(&p.settings, schema),
        })
        .collect();
    // Where each effective value comes from: the nearest level that sets it (the merge
    // lets later levels override earlier ones), else the module's default.
    let effective = shown(&view.effective, schema)
        .into_iter()
        .map(|(k, v)| {
            let from = chain
                .iter()
                .rev()
                .find(|p| p.settings.get(&k).is_some_and(|x| !x.is_null()))
                .map_or_else(|| "module default".to_string(), |p| p.name.to_string());
            (k, v, from)
        })
        .collect();
    let p = &view.product;
    let content = ProductPage {
        name: p.name.to_string(),
        module: p.module.clone(),
        server_group: p
            .server_group
            .as_ref()
            .map_or_else(|| "—".into(), |g| g.to_string()),
        auto_setup: super::wire(p.auto_setup),
        updated: when(p.updated_at),
        edit: s
            .may(Method::PATCH, "/v1/products/{product}")
            .then(|| format!("/console/products/{}/edit", p.id)),
        levels,
        effective,
    };
    page(&s, &headers, "/console/products", p.name.as_ref(), content)
}
