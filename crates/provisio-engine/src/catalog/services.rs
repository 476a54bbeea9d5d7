//! Services: ordering (placement on a server, the create job in the same transaction), changes, listing and removal.

use super::*;

impl Engine {
    /// Picks the enabled server of the product's module (and group, if it names one) that
    /// has the fewest live services.
    pub(crate) async fn place(&self, product: &Product) -> Result<Option<Server>> {
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
        // An order placed again under its key is the service it placed the first time.
        if let Some(key) = &input.order_key {
            if let Some(s) = self.store.find_service_by_order_key(key).await? {
                return Ok(s);
            }
        }
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
            order_key: input.order_key.clone(),
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
            let now = self.now();
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
        let job = (product.auto_setup == AutoSetup::OnOrder)
            .then(|| self.new_job(server.id, Action::Create, Settings::new(), self.now()));
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
