//! Record keeping: create, change, list and remove clients, servers, products and services,
//! with every write parsed and validated against the module's schemas before it is stored.

use std::collections::HashMap;

use provisio_core::client::{
    check_custom_field_key, Client, ClientStatus, CustomFields, NewClient, CUSTOM_FIELD_MAX_LEN,
};
use provisio_core::module::Action;
use provisio_core::module::{ModuleInfo, SchemaScope};
use provisio_core::money::Currency;
use provisio_core::page::{Page, PageRequest};
use provisio_core::product::{merge_chain, resolve_chain, AutoSetup, NewProduct, Product};
use provisio_core::secret::{as_sealed, generate_password};
use provisio_core::server::{NewServer, Server, DEFAULT_MAX_CONCURRENT};
use provisio_core::service::{generate_username, InvoiceRef, NewService, Service, ServiceStatus};
use provisio_core::settings::{Mode, Settings};
use provisio_core::text::{DisplayName, Email, Handle, Username};
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_store::{ClientFilter, ProductFilter, ServerFilter, ServiceFilter};
use secrecy::{ExposeSecret, SecretString};

use crate::error::Problems;
use crate::input::*;
use crate::{Engine, EngineError, Result};

const DEFAULT_GROUP: &str = "default";
const MAX_CONCURRENT_LIMIT: u32 = 10_000;
const MAX_PER_SECOND_LIMIT: u32 = 1_000_000;

/// A product with what inheritance makes of it.
#[derive(Debug, Clone)]
pub struct ProductView {
    pub product: Product,
    pub extends_name: Option<String>,
    /// The merged, validated settings (defaults filled in); secrets still sealed.
    pub effective: Settings,
}

fn not_found(what: &'static str, key: impl std::fmt::Display) -> EngineError {
    EngineError::NotFound {
        what,
        key: key.to_string(),
    }
}

fn conflict(message: impl Into<String>) -> EngineError {
    EngineError::Conflict {
        field: None,
        message: message.into(),
    }
}

/// Callers never send sealed markers: they only ever see secrets redacted, so a marker in
/// input is either a mistake or an attempt to plant ciphertext.
fn reject_markers(p: &mut Problems, prefix: &str, s: &Settings) {
    for (k, v) in s {
        if as_sealed(v).is_some() {
            p.push(&format!("{prefix}.{k}"), "type", "must be a plain value");
        }
    }
}

/// Applies a settings patch: keys set, `null` removes.
fn merge_patch(current: &Settings, patch: &Settings) -> Settings {
    let mut out = current.clone();
    for (k, v) in patch {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn check_limits(p: &mut Problems, max_concurrent: u32, max_per_second: Option<u32>) {
    if max_concurrent == 0 || max_concurrent > MAX_CONCURRENT_LIMIT {
        p.push(
            "max_concurrent",
            "range",
            format!("must be between 1 and {MAX_CONCURRENT_LIMIT}"),
        );
    }
    if let Some(r) = max_per_second {
        if r == 0 || r > MAX_PER_SECOND_LIMIT {
            p.push(
                "max_per_second",
                "range",
                format!("must be between 1 and {MAX_PER_SECOND_LIMIT}"),
            );
        }
    }
}

fn check_custom_fields<'a>(
    p: &mut Problems,
    fields: impl Iterator<Item = (&'a String, Option<&'a String>)>,
) {
    for (k, v) in fields {
        if let Err(e) = check_custom_field_key(k) {
            p.push(&format!("custom_fields.{k}"), e.rule, e.message);
        }
        if v.is_some_and(|v| v.len() > CUSTOM_FIELD_MAX_LEN) {
            p.push(
                &format!("custom_fields.{k}"),
                "max_length",
                format!("must be at most {CUSTOM_FIELD_MAX_LEN} bytes"),
            );
        }
    }
}

/// Longest module output name a product may copy into a client field.
const OUTPUT_NAME_MAX_LEN: usize = 100;

fn check_client_fields(
    p: &mut Problems,
    map: provisio_core::product::ClientFieldMap,
) -> provisio_core::product::ClientFieldMap {
    for (field, output) in &map {
        if let Err(e) = check_custom_field_key(field) {
            p.push(&format!("client_fields.{field}"), e.rule, e.message);
        }
        let ok = !output.is_empty()
            && output.len() <= OUTPUT_NAME_MAX_LEN
            && output
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            p.push(
                &format!("client_fields.{field}"),
                "pattern",
                format!(
                    "must name a module output: 1 to {OUTPUT_NAME_MAX_LEN} of a-z A-Z 0-9 _ - ."
                ),
            );
        }
    }
    map
}

impl Engine {
    pub(crate) fn module(&self, p: &mut Problems, name: &str) -> Option<&ModuleInfo> {
        let found = self.modules.info(name);
        if found.is_none() {
            let known: Vec<&str> = self.modules.names().collect();
            p.push(
                "module",
                "unknown",
                format!("unknown module '{name}' (known: {})", known.join(", ")),
            );
        }
        found
    }

    /// Validates settings completely against a module schema, adds problems under
    /// `settings.` and returns them normalised with secrets sealed.
    pub(crate) fn complete_settings(
        &self,
        p: &mut Problems,
        info: &ModuleInfo,
        scope: SchemaScope,
        settings: &Settings,
    ) -> Option<Settings> {
        let schema = info.schema(scope);
        match schema.validate(settings, Mode::Complete) {
            Ok(mut s) => {
                let extra = self
                    .modules
                    .get(&info.name)
                    .map(|m| m.check_settings(scope, &s))
                    .unwrap_or_default();
                if !extra.is_empty() {
                    p.extend_prefixed("settings", extra);
                    return None;
                }
                self.cipher.seal_settings(schema, &mut s);
                Some(s)
            }
            Err(errors) => {
                p.extend_prefixed("settings", errors);
                None
            }
        }
    }

    // ---------------------------------------------------------------- clients

    pub async fn create_client(&self, input: ClientCreate) -> Result<Client> {
        let mut p = Problems::default();
        let name = p.take("name", DisplayName::parse(&input.name));
        let email = p.take("email", Email::parse(&input.email));
        let currency = match &input.currency {
            Some(c) => p.take("currency", Currency::parse(c)),
            None => Some(self.options.default_currency.clone()),
        };
        check_custom_fields(
            &mut p,
            input.custom_fields.iter().map(|(k, v)| (k, Some(v))),
        );
        p.finish()?;
        let new = NewClient {
            name: name.expect("checked"),
            email: email.expect("checked"),
            status: input.status.unwrap_or(ClientStatus::Active),
            balance_minor: input.balance_minor.unwrap_or(0),
            currency: currency.expect("checked"),
            custom_fields: input.custom_fields,
        };
        let payload = serde_json::json!({"client": {
            "name": new.name.as_str(), "email": new.email.as_str(), "status": new.status,
            "balance_minor": new.balance_minor, "currency": new.currency.as_str(),
            "custom_fields": new.custom_fields,
        }});
        self.run_gates(
            "client.create.before",
            payload,
            &mut crate::gates::no_changes("client data"),
        )
        .await?;
        Ok(self.store.insert_client(&new, &["client.created"]).await?)
    }

    pub async fn get_client(&self, id: ClientId) -> Result<Client> {
        self.store
            .get_client(id)
            .await?
            .ok_or_else(|| not_found("client", id))
    }

    pub async fn update_client(&self, id: ClientId, patch: ClientPatch) -> Result<Client> {
        let before = self.get_client(id).await?;
        let mut client = before.clone();
        let mut p = Problems::default();
        if let Some(n) = &patch.name {
            if let Some(n) = p.take("name", DisplayName::parse(n)) {
                client.name = n;
            }
        }
        if let Some(e) = &patch.email {
            if let Some(e) = p.take("email", Email::parse(e)) {
                client.email = e;
            }
        }
        if let Some(cf) = &patch.custom_fields {
            check_custom_fields(&mut p, cf.iter().map(|(k, v)| (k, v.as_ref())));
        }
        p.finish()?;
        if let Some(s) = patch.status {
            client.status = s;
        }
        if let Some(cf) = patch.custom_fields {
            apply_custom_fields(&mut client.custom_fields, cf);
        }
        let announce = client_changes(&before, &client);
        self.run_gates(
            "client.update.before",
            serde_json::json!({"client": before, "changed": client}),
            &mut crate::gates::no_changes("client data"),
        )
        .await?;
        Ok(self.store.update_client(&client, &announce).await?)
    }

    pub async fn archive_client(&self, id: ClientId) -> Result<Client> {
        let before = self.get_client(id).await?;
        let mut client = before.clone();
        client.status = ClientStatus::Archived;
        let announce = client_changes(&before, &client);
        Ok(self.store.update_client(&client, &announce).await?)
    }

    pub async fn delete_client(&self, id: ClientId) -> Result<()> {
        let client = self.get_client(id).await?;
        let services = self
            .store
            .count_services(&ServiceFilter {
                client_id: Some(id),
                ..Default::default()
            })
            .await?;
        if services > 0 {
            return Err(conflict(format!(
                "client {id} has {services} service(s); delete them first, or archive the client"
            )));
        }
        let transactions = self
            .store
            .list_transactions(id, PageRequest::first(1))
            .await?;
        if !transactions.items.is_empty() {
            return Err(conflict(format!(
                "client {id} has balance transactions, which are kept for accounting; archive the client instead"
            )));
        }
        self.run_gates(
            "client.delete.before",
            serde_json::json!({ "client": client }),
            &mut crate::gates::no_changes("client data"),
        )
        .await?;
        self.store.delete_client(id, &["client.deleted"]).await?;
        Ok(())
    }

    pub async fn list_clients(&self, f: &ClientFilter, page: PageRequest) -> Result<Page<Client>> {
        Ok(self.store.list_clients(f, page).await?)
    }

    // ---------------------------------------------------------------- servers

    pub async fn create_server(&self, input: ServerCreate) -> Result<Server> {
        let mut p = Problems::default();
        let name = p.take("name", Handle::parse(&input.name));
        let group = p.take(
            "group",
            Handle::parse(input.group.as_deref().unwrap_or(DEFAULT_GROUP)),
        );
        let max_concurrent = input.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        check_limits(&mut p, max_concurrent, input.max_per_second);
        reject_markers(&mut p, "settings", &input.settings);
        let settings = match self.module(&mut p, &input.module) {
            Some(info) if p.is_empty() => {
                self.complete_settings(&mut p, info, SchemaScope::Server, &input.settings)
            }
            _ => None,
        };
        p.finish()?;
        let new = NewServer {
            name: name.expect("checked"),
            module: input.module,
            group: group.expect("checked"),
            settings: settings.expect("checked"),
            max_concurrent,
            max_per_second: input.max_per_second,
            enabled: input.enabled.unwrap_or(true),
        };
        Ok(self.store.insert_server(&new).await?)
    }

    pub async fn find_server(&self, r: &RecordRef) -> Result<Server> {
        let found = match r {
            RecordRef::Id(id) => self.store.get_server(ServerId(*id)).await?,
            RecordRef::Name(n) => self.store.get_server_by_name(n).await?,
        };
        found.ok_or_else(|| not_found("server", r))
    }

    pub async fn update_server(&self, r: &RecordRef, patch: ServerPatch) -> Result<Server> {
        let mut server = self.find_server(r).await?;
        let mut p = Problems::default();
        if let Some(n) = &patch.name {
            if let Some(n) = p.take("name", Handle::parse(n)) {
                server.name = n;
            }
        }
        if let Some(g) = &patch.group {
            if let Some(g) = p.take("group", Handle::parse(g)) {
                server.group = g;
            }
        }
        if let Some(m) = patch.max_concurrent {
            server.max_concurrent = m;
        }
        server.max_per_second = patch.max_per_second.apply(server.max_per_second);
        check_limits(&mut p, server.max_concurrent, server.max_per_second);
        if let Some(s) = &patch.settings {
            reject_markers(&mut p, "settings", s);
            if p.is_empty() {
                let merged = merge_patch(&server.settings, s);
                let info = self.module(&mut p, &server.module);
                if let Some(info) = info {
                    if let Some(s) =
                        self.complete_settings(&mut p, info, SchemaScope::Server, &merged)
                    {
                        server.settings = s;
                    }
                }
            }
        }
        p.finish()?;
        if let Some(e) = patch.enabled {
            server.enabled = e;
        }
        Ok(self.store.update_server(&server).await?)
    }

    pub async fn delete_server(&self, r: &RecordRef) -> Result<()> {
        let server = self.find_server(r).await?;
        let services = self
            .store
            .count_services(&ServiceFilter {
                server_id: Some(server.id),
                ..Default::default()
            })
            .await?;
        if services > 0 {
            return Err(conflict(format!(
                "server '{}' has {services} service(s); move or delete them first, or disable the server",
                server.name
            )));
        }
        self.store.delete_server(server.id).await?;
        Ok(())
    }

    pub async fn list_servers(&self, f: &ServerFilter, page: PageRequest) -> Result<Page<Server>> {
        Ok(self.store.list_servers(f, page).await?)
    }

    // ---------------------------------------------------------------- products

    pub async fn find_product(&self, r: &RecordRef) -> Result<Product> {
        let found = match r {
            RecordRef::Id(id) => self.store.get_product(ProductId(*id)).await?,
            RecordRef::Name(n) => self.store.get_product_by_name(n).await?,
        };
        found.ok_or_else(|| not_found("product", r))
    }

    /// The product's chain root first, fetched from the store; `candidate` stands in for
    /// its stored version so a change can be checked before it is written.
    async fn chain_of(
        &self,
        candidate: &Product,
    ) -> Result<std::result::Result<Vec<Product>, provisio_core::product::ExtendsError>> {
        // Chains are short; fetch parents one by one into a map the pure resolver reads.
        let mut known: HashMap<ProductId, Product> = HashMap::new();
        let mut next = candidate.extends;
        while let Some(id) = next {
            if id == candidate.id || known.contains_key(&id) {
                break;
            }
            match self.store.get_product(id).await? {
                Some(p) => {
                    next = p.extends;
                    known.insert(id, p);
                }
                None => break,
            }
        }
        Ok(resolve_chain(candidate, |id| {
            if id == candidate.id {
                Some(candidate.clone())
            } else {
                known.get(&id).cloned()
            }
        }))
    }

    /// Validates `candidate`'s own settings (partially) and its effective settings
    /// (completely), seals its own secrets, and returns the effective settings.
    async fn check_product(
        &self,
        p: &mut Problems,
        candidate: &mut Product,
    ) -> Result<Option<Settings>> {
        let Some(info) = self.module(p, &candidate.module) else {
            return Ok(None);
        };
        let schema = info.schema(SchemaScope::Product);
        match schema.validate(&candidate.settings, Mode::Partial) {
            Ok(mut own) => {
                self.cipher.seal_settings(schema, &mut own);
                candidate.settings = own;
            }
            Err(errors) => {
                p.extend_prefixed("settings", errors);
                return Ok(None);
            }
        }
        let chain = match self.chain_of(candidate).await? {
            Ok(c) => c,
            Err(e) => {
                p.push("extends", "extends", e);
                return Ok(None);
            }
        };
        let merged = merge_chain(chain.iter().map(|p| &p.settings));
        match schema.validate(&merged, Mode::Complete) {
            Ok(eff) => {
                let extra = self
                    .modules
                    .get(&info.name)
                    .map(|m| m.check_settings(SchemaScope::Product, &eff))
                    .unwrap_or_default();
                if !extra.is_empty() {
                    p.extend_prefixed("settings", extra);
                    return Ok(None);
                }
                Ok(Some(eff))
            }
            Err(errors) => {
                p.extend_prefixed("settings", errors);
                Ok(None)
            }
        }
    }

    async fn parent_id(
        &self,
        p: &mut Problems,
        extends: Option<&str>,
    ) -> Result<Option<ProductId>> {
        let Some(name) = extends else { return Ok(None) };
        match self.store.get_product_by_name(name).await? {
            Some(parent) => Ok(Some(parent.id)),
            None => {
                p.push("extends", "exists", format!("no product named '{name}'"));
                Ok(None)
            }
        }
    }

    pub async fn create_product(&self, input: ProductCreate) -> Result<ProductView> {
        let mut p = Problems::default();
        let name = p.take("name", Handle::parse(&input.name));
        let server_group = match &input.server_group {
            Some(g) => p.take("server_group", Handle::parse(g)),
            None => None,
        };
        reject_markers(&mut p, "settings", &input.settings);
        let extends = self.parent_id(&mut p, input.extends.as_deref()).await?;
        let now = chrono::Utc::now();
        let mut candidate = Product {
            // Not stored yet: an id no stored product has, so the chain check cannot confuse it.
            id: ProductId(0),
            name: name
                .clone()
                .unwrap_or_else(|| Handle::parse("new").expect("valid")),
            module: input.module.clone(),
            extends,
            server_group: server_group.clone(),
            settings: input.settings,
            auto_setup: input.auto_setup.unwrap_or_default(),
            client_fields: check_client_fields(&mut p, input.client_fields.unwrap_or_default()),
            created_at: now,
            updated_at: now,
        };
        if p.is_empty() {
            self.check_product(&mut p, &mut candidate).await?;
        }
        p.finish()?;
        let stored = self
            .store
            .insert_product(&NewProduct {
                name: candidate.name,
                module: candidate.module,
                extends: candidate.extends,
                server_group: candidate.server_group,
                settings: candidate.settings,
                auto_setup: candidate.auto_setup,
                client_fields: candidate.client_fields,
            })
            .await?;
        self.product_view(stored).await
    }

    pub async fn get_product(&self, r: &RecordRef) -> Result<ProductView> {
        let product = self.find_product(r).await?;
        self.product_view(product).await
    }

    pub async fn product_view(&self, product: Product) -> Result<ProductView> {
        let chain = self
            .chain_of(&product)
            .await?
            .map_err(|e| EngineError::Store(provisio_store::StoreError::Corrupt(e.to_string())))?;
        let extends_name = product
            .extends
            .and_then(|id| chain.iter().find(|p| p.id == id))
            .map(|p| p.name.to_string());
        let merged = merge_chain(chain.iter().map(|p| &p.settings));
        // Stored products were valid when written; show defaults filled in when they still are.
        let effective = self
            .modules
            .info(&product.module)
            .and_then(|i| i.product_schema.validate(&merged, Mode::Complete).ok())
            .unwrap_or(merged);
        Ok(ProductView {
            product,
            extends_name,
            effective,
        })
    }

    pub async fn update_product(&self, r: &RecordRef, patch: ProductPatch) -> Result<ProductView> {
        let mut product = self.find_product(r).await?;
        let mut p = Problems::default();
        if let Some(n) = &patch.name {
            if let Some(n) = p.take("name", Handle::parse(n)) {
                product.name = n;
            }
        }
        match &patch.server_group {
            crate::patch::Patch::Keep => {}
            crate::patch::Patch::Clear => product.server_group = None,
            crate::patch::Patch::Set(g) => {
                if let Some(g) = p.take("server_group", Handle::parse(g)) {
                    product.server_group = Some(g);
                }
            }
        }
        match &patch.extends {
            crate::patch::Patch::Keep => {}
            crate::patch::Patch::Clear => product.extends = None,
            crate::patch::Patch::Set(name) => {
                product.extends = self.parent_id(&mut p, Some(name)).await?;
            }
        }
        if let Some(s) = &patch.settings {
            reject_markers(&mut p, "settings", s);
            product.settings = merge_patch(&product.settings, s);
        }
        if let Some(a) = patch.auto_setup {
            product.auto_setup = a;
        }
        if let Some(m) = patch.client_fields {
            product.client_fields = check_client_fields(&mut p, m);
        }
        if p.is_empty() {
            self.check_product(&mut p, &mut product).await?;
        }
        if p.is_empty() {
            self.check_descendants(&mut p, &product).await?;
        }
        p.finish()?;
        let stored = self.store.update_product(&product).await?;
        self.product_view(stored).await
    }

    /// A change to a parent must not leave any product that inherits from it invalid.
    async fn check_descendants(&self, p: &mut Problems, changed: &Product) -> Result<()> {
        let mut queue = vec![changed.id];
        let mut seen = vec![changed.id];
        while let Some(id) = queue.pop() {
            let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
            loop {
                let children = self
                    .store
                    .list_products(
                        &ProductFilter {
                            extends: Some(id),
                            ..Default::default()
                        },
                        page,
                    )
                    .await?;
                for child in &children.items {
                    if seen.contains(&child.id) {
                        continue;
                    }
                    seen.push(child.id);
                    queue.push(child.id);
                    let chain = self.chain_of(child).await?;
                    let Ok(chain) = chain else { continue };
                    let chain: Vec<Product> = chain
                        .into_iter()
                        .map(|x| {
                            if x.id == changed.id {
                                changed.clone()
                            } else {
                                x
                            }
                        })
                        .collect();
                    let merged = merge_chain(chain.iter().map(|x| &x.settings));
                    if let Some(info) = self.modules.info(&child.module) {
                        if let Err(errors) = info.product_schema.validate(&merged, Mode::Complete) {
                            for e in errors {
                                p.push(
                                    &format!("settings.{}", e.field),
                                    &e.rule,
                                    format!(
                                        "would make product '{}', which extends this one, invalid: {}",
                                        child.name, e.message
                                    ),
                                );
                            }
                        }
                    }
                }
                match children.next {
                    Some(n) => page.after = Some(n),
                    None => break,
                }
            }
        }
        Ok(())
    }

    pub async fn delete_product(&self, r: &RecordRef) -> Result<()> {
        let product = self.find_product(r).await?;
        let children = self
            .store
            .list_products(
                &ProductFilter {
                    extends: Some(product.id),
                    ..Default::default()
                },
                PageRequest::first(5),
            )
            .await?;
        if !children.items.is_empty() {
            let names: Vec<String> = children.items.iter().map(|c| c.name.to_string()).collect();
            return Err(conflict(format!(
                "product '{}' is extended by {}; change or delete those first",
                product.name,
                names.join(", ")
            )));
        }
        let services = self
            .store
            .count_services(&ServiceFilter {
                product_id: Some(product.id),
                ..Default::default()
            })
            .await?;
        if services > 0 {
            return Err(conflict(format!(
                "product '{}' has {services} service(s); delete them first",
                product.name
            )));
        }
        self.store.delete_product(product.id).await?;
        Ok(())
    }

    pub async fn list_products(
        &self,
        f: &ProductFilter,
        page: PageRequest,
    ) -> Result<Page<ProductView>> {
        let page = self.store.list_products(f, page).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for product in page.items {
            items.push(self.product_view(product).await?);
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }

    // ---------------------------------------------------------------- services

    /// Picks the enabled server of the product's module (and group, if it names one) that
    /// has the fewest live services.
    async fn place(&self, product: &Product) -> Result<Option<Server>> {
        let mut best: Option<(i64, Server)> = None;
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let servers = self
                .store
                .list_servers(
                    &ServerFilter {
                        module: Some(product.module.clone()),
                        group: product.server_group.as_ref().map(|g| g.to_string()),
                        enabled: Some(true),
                    },
                    page,
                )
                .await?;
            for s in servers.items {
                let load = self
                    .store
                    .count_services(&ServiceFilter {
                        server_id: Some(s.id),
                        live_only: true,
                        ..Default::default()
                    })
                    .await?;
                if best.as_ref().is_none_or(|(l, _)| load < *l) {
                    best = Some((load, s));
                }
            }
            match servers.next {
                Some(n) => page.after = Some(n),
                None => break,
            }
        }
        Ok(best.map(|(_, s)| s))
    }

    pub async fn create_service(&self, input: ServiceCreate) -> Result<Service> {
        let mut p = Problems::default();
        let client = self.store.get_client(input.client_id).await?;
        match &client {
            None => p.push(
                "client_id",
                "exists",
                format!("no client with id {}", input.client_id),
            ),
            Some(c) if c.status == ClientStatus::Archived => p.push(
                "client_id",
                "status",
                format!("client {} is archived", c.id),
            ),
            _ => {}
        }
        let product = match self.find_product(&input.product).await {
            Ok(prod) => Some(prod),
            Err(EngineError::NotFound { .. }) => {
                p.push("product", "exists", format!("no product {}", input.product));
                None
            }
            Err(e) => return Err(e),
        };
        let username = match &input.username {
            Some(u) => p.take("username", Username::parse(u)),
            None => Some(generate_username()),
        };
        if let Some(pw) = &input.password {
            check_password(&mut p, pw);
        }
        let invoice = opt_invoice(&mut p, "invoice", input.invoice.as_deref());
        let parent_invoice = opt_invoice(&mut p, "parent_invoice", input.parent_invoice.as_deref());
        reject_markers(&mut p, "settings", &input.settings);

        let mut server = None;
        if let Some(product) = &product {
            server = match &input.server {
                Some(r) => match self.find_server(r).await {
                    Ok(s) => {
                        if s.module != product.module {
                            p.push(
                                "server",
                                "module",
                                format!(
                                    "server '{}' runs module '{}' but product '{}' needs '{}'",
                                    s.name, s.module, product.name, product.module
                                ),
                            );
                        }
                        Some(s)
                    }
                    Err(EngineError::NotFound { .. }) => {
                        p.push("server", "exists", format!("no server {r}"));
                        None
                    }
                    Err(e) => return Err(e),
                },
                None => {
                    let placed = self.place(product).await?;
                    if placed.is_none() {
                        p.push(
                            "server",
                            "placement",
                            format!(
                                "no enabled server of module '{}'{} to place the service on",
                                product.module,
                                product
                                    .server_group
                                    .as_ref()
                                    .map(|g| format!(" in group '{g}'"))
                                    .unwrap_or_default()
                            ),
                        );
                    }
                    placed
                }
            };
        }
        let settings = match (&product, p.is_empty()) {
            (Some(product), true) => match self.module(&mut p, &product.module) {
                Some(info) => {
                    self.complete_settings(&mut p, info, SchemaScope::Service, &input.settings)
                }
                None => None,
            },
            _ => None,
        };
        p.finish()?;
        let password = input.password.unwrap_or_else(|| generate_password(16));
        let product = product.expect("checked");
        let server = server.expect("checked");
        let mut new = NewService {
            client_id: input.client_id,
            product_id: product.id,
            server_id: server.id,
            username: username.expect("checked"),
            password: self.cipher.seal_str(&password),
            status: ServiceStatus::Pending,
            invoice,
            parent_invoice,
            settings: settings.expect("checked"),
        };
        if product.auto_setup == AutoSetup::OnOrder {
            // The create runs now, so its gates are asked now; they see the order as a
            // service not yet stored (id 0) and may change its username, password, settings.
            let now = chrono::Utc::now();
            let mut draft = Service {
                id: ServiceId(0),
                client_id: new.client_id,
                product_id: new.product_id,
                server_id: new.server_id,
                username: new.username.clone(),
                password: new.password.clone(),
                status: ServiceStatus::Pending,
                suspension: None,
                invoice: new.invoice.clone(),
                parent_invoice: new.parent_invoice.clone(),
                settings: new.settings.clone(),
                outputs: Settings::new(),
                product_overrides: Settings::new(),
                created_at: now,
                updated_at: now,
            };
            self.gate_action(
                &mut draft,
                &server.module,
                &Action::Create,
                &mut Settings::new(),
            )
            .await?;
            new.username = draft.username;
            new.password = draft.password;
            new.settings = draft.settings;
        }
        // The create job is written with the service, so an order the API accepted is never
        // lost before it is provisioned.
        let job = (product.auto_setup == AutoSetup::OnOrder).then(|| {
            self.new_job(
                server.id,
                Action::Create,
                Settings::new(),
                chrono::Utc::now(),
            )
        });
        let (service, job) = self
            .store
            .insert_service_with_job(&new, job.as_ref())
            .await?;
        if job.is_some() {
            // Stored right after the order rather than with it: the event needs the new
            // service's id. Losing it to a crash in between loses only the announcement.
            let before = crate::events::before(&Settings::new(), "create", &service);
            if let Err(e) = self.store.insert_events(&[before]).await {
                tracing::warn!(service = %service.id, error = %e, "announcing an order's create failed");
            }
            self.wake.notify_one();
        }
        Ok(service)
    }

    pub async fn get_service(&self, id: ServiceId) -> Result<Service> {
        self.store
            .get_service(id)
            .await?
            .ok_or_else(|| not_found("service", id))
    }

    pub async fn update_service(&self, id: ServiceId, patch: ServicePatch) -> Result<Service> {
        let mut service = self.get_service(id).await?;
        let mut p = Problems::default();
        let pending = service.status == ServiceStatus::Pending;
        if let Some(u) = &patch.username {
            if !pending {
                p.push(
                    "username",
                    "status",
                    "can only change while the service is pending",
                );
            } else if let Some(u) = p.take("username", Username::parse(u)) {
                service.username = u;
            }
        }
        if let Some(pw) = &patch.password {
            if !pending {
                p.push(
                    "password",
                    "status",
                    "can only be set while the service is pending; use the change-password action",
                );
            } else {
                check_password(&mut p, pw);
            }
        }
        match &patch.invoice {
            crate::patch::Patch::Keep => {}
            crate::patch::Patch::Clear => service.invoice = None,
            crate::patch::Patch::Set(v) => {
                service.invoice = opt_invoice(&mut p, "invoice", Some(v))
            }
        }
        match &patch.parent_invoice {
            crate::patch::Patch::Keep => {}
            crate::patch::Patch::Clear => service.parent_invoice = None,
            crate::patch::Patch::Set(v) => {
                service.parent_invoice = opt_invoice(&mut p, "parent_invoice", Some(v))
            }
        }
        if let Some(s) = &patch.settings {
            reject_markers(&mut p, "settings", s);
            if p.is_empty() {
                let product = self
                    .store
                    .get_product(service.product_id)
                    .await?
                    .ok_or_else(|| not_found("product", service.product_id))?;
                let merged = merge_patch(&service.settings, s);
                if let Some(info) = self.module(&mut p, &product.module) {
                    if let Some(s) =
                        self.complete_settings(&mut p, info, SchemaScope::Service, &merged)
                    {
                        service.settings = s;
                    }
                }
            }
        }
        p.finish()?;
        if let Some(pw) = &patch.password {
            service.password = self.cipher.seal_str(pw);
        }
        Ok(self.store.update_service(&service).await?)
    }

    pub async fn delete_service(&self, id: ServiceId) -> Result<()> {
        self.get_service(id).await?;
        let open = self
            .store
            .list_jobs(
                &provisio_store::JobFilter {
                    service_id: Some(id),
                    open_only: true,
                    ..Default::default()
                },
                PageRequest::first(1),
            )
            .await?;
        if !open.items.is_empty() {
            return Err(conflict(format!(
                "service {id} has a {} job pending; wait for it or let it fail first",
                open.items[0].action
            )));
        }
        // Read after the jobs: a create that finished meanwhile shows here as `active`.
        let service = self.get_service(id).await?;
        if !service.status.deletable() {
            return Err(conflict(format!(
                "service {id} is {}; terminate it first so the remote account is removed",
                service.status.as_str()
            )));
        }
        self.store.delete_service(id).await?;
        Ok(())
    }

    /// Every service `f` selects, page after page.
    pub(crate) async fn all_services(&self, f: &ServiceFilter) -> Result<Vec<Service>> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = self.store.list_services(f, page).await?;
            out.extend(got.items);
            match got.next {
                Some(c) => page.after = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// The enabled servers whose module can do `cap`.
    pub(crate) async fn enabled_servers_with(
        &self,
        cap: provisio_core::module::Capability,
    ) -> Result<Vec<Server>> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        let enabled = ServerFilter {
            enabled: Some(true),
            ..Default::default()
        };
        loop {
            let got = self.store.list_servers(&enabled, page).await?;
            out.extend(
                got.items
                    .into_iter()
                    .filter(|s| self.modules.info(&s.module).is_some_and(|m| m.can(cap))),
            );
            match got.next {
                Some(n) => page.after = Some(n),
                None => return Ok(out),
            }
        }
    }

    pub async fn list_services(
        &self,
        f: &ServiceFilter,
        page: PageRequest,
    ) -> Result<Page<Service>> {
        Ok(self.store.list_services(f, page).await?)
    }

    /// The service's password in clear, for the one endpoint that shows it to an admin.
    pub async fn reveal_password(&self, id: ServiceId) -> Result<SecretString> {
        let service = self.get_service(id).await?;
        Ok(self.cipher.open(&service.password)?)
    }
}

/// A sealed value as stored inside a settings-like map (job params).
pub(crate) fn sealed_value(s: &provisio_core::secret::Sealed) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({ provisio_core::secret::SEALED_MARKER: base64::engine::general_purpose::STANDARD.encode(&s.0) })
}

/// The events a change of a client announces: `client.updated` for any change, plus
/// `client.archived` and `client.custom_fields_updated` when those parts changed.
fn client_changes(before: &Client, after: &Client) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    let fields_changed = before.custom_fields != after.custom_fields;
    let archived =
        before.status != ClientStatus::Archived && after.status == ClientStatus::Archived;
    if before.name != after.name
        || before.email != after.email
        || before.status != after.status
        || fields_changed
    {
        kinds.push("client.updated");
    }
    if archived {
        kinds.push("client.archived");
    }
    if fields_changed {
        kinds.push("client.custom_fields_updated");
    }
    kinds
}

fn apply_custom_fields(
    fields: &mut CustomFields,
    patch: std::collections::BTreeMap<String, Option<String>>,
) {
    for (k, v) in patch {
        match v {
            Some(v) => {
                fields.insert(k, v);
            }
            None => {
                fields.remove(&k);
            }
        }
    }
}

fn check_password(p: &mut Problems, pw: &SecretString) {
    let n = pw.expose_secret().chars().count();
    // The message never repeats the password.
    if !(8..=128).contains(&n) {
        p.push("password", "length", "must be 8 to 128 characters");
    } else if pw.expose_secret().chars().any(char::is_control) {
        p.push("password", "pattern", "must not contain control characters");
    }
}

fn opt_invoice(p: &mut Problems, field: &str, v: Option<&str>) -> Option<InvoiceRef> {
    v.and_then(|v| p.take(field, InvoiceRef::parse(v)))
}
