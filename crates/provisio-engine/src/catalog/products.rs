//! Products: settings checked along the `extends` chain, and the effective settings a service gets.

use super::*;

impl Engine {
    pub async fn find_product(&self, r: &RecordRef) -> Result<Product> {
        let seen = self.catalog_now().await?;
        let kept = self.catalog.get(seen, |c| match r {
            RecordRef::Id(id) => c.products_by_id.get(&ProductId(*id)).cloned(),
            RecordRef::Name(n) => c.products_by_name.get(n).cloned(),
        });
        if let Some(p) = kept {
            return Ok(p);
        }
        let found = match r {
            RecordRef::Id(id) => self.store.get_product(ProductId(*id)).await?,
            RecordRef::Name(n) => self.store.get_product_by_name(n).await?,
        };
        if let Some(p) = &found {
            self.catalog.put(seen, |c| {
                c.products_by_id.insert(p.id, p.clone());
                c.products_by_name.insert(p.name.to_string(), p.clone());
            });
        }
        found.ok_or_else(|| not_found("product", r))
    }

    /// The product's chain root first, fetched from the store; `candidate` stands in for
    /// its stored version so a change can be checked before it is written.
    pub(crate) async fn chain_of(
        &self,
        candidate: &Product,
    ) -> Result<std::result::Result<Vec<Product>, provisio_core::product::ExtendsError>> {
        // The parents in one read (a recursive statement), into a map the pure resolver
        // reads; the candidate itself, maybe not yet stored as it is, ends the walk.
        let mut known: HashMap<ProductId, Product> = HashMap::new();
        if let Some(parent) = candidate.extends.filter(|&p| p != candidate.id) {
            for p in self.store.product_chain_rows(parent).await? {
                if p.id == candidate.id {
                    break;
                }
                known.insert(p.id, p);
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
    pub(crate) async fn check_product(
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

    pub(crate) async fn parent_id(
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
        let now = self.now();
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

    /// A product's view beside its `extends` chain, root first and the product itself last:
    /// each level's own settings (secrets still sealed), merged as `product_view` merges them.
    pub async fn product_chain(&self, r: &RecordRef) -> Result<(ProductView, Vec<Product>)> {
        let product = self.find_product(r).await?;
        let chain = self
            .chain_of(&product)
            .await?
            .map_err(|e| EngineError::Store(provisio_store::StoreError::Corrupt(e.to_string())))?;
        Ok((self.product_view(product).await?, chain))
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
    pub(crate) async fn check_descendants(
        &self,
        p: &mut Problems,
        changed: &Product,
    ) -> Result<()> {
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
}
