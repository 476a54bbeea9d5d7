//! Services: ordering (placement on a server, the create job in the same transaction), changes, listing and removal.

use super::*;

/// A stored order: the service, its create job (none when the product sets up later), and
/// whether it was placed before under the same key.
#[derive(Debug, Clone)]
pub struct Ordered {
    pub service: Service,
    pub job: Option<provisio_core::job::Job>,
    pub replayed: bool,
}

/// An order checked and ready to store.
struct PreparedOrder {
    new: NewService,
    job: Option<provisio_core::job::NewJob>,
}

/// The event that announces an order's create job (`service.create.before`), stored in the
/// order's own transaction; an order without a job (set up later) announces nothing here.
pub(super) fn announce_create(
    service: &Service,
    job: Option<&provisio_core::job::Job>,
) -> Vec<provisio_core::event::NewEvent> {
    job.map(|_| crate::events::before(&Settings::new(), "create", service))
        .into_iter()
        .collect()
}

impl Engine {
    /// Picks the enabled server of the product's module (and group, if it names one) that
    /// has the fewest live services, counting `extra` more on the servers it names (the
    /// orders of a batch placed before this one).
    pub(crate) async fn place(
        &self,
        product: &Product,
        extra: &HashMap<ServerId, i64>,
    ) -> Result<Option<Server>> {
        let seen = self.catalog_now().await?;
        let group = product.server_group.as_ref().map(|g| g.to_string());
        let place_key = (product.module.clone(), group.clone());
        let kept = self
            .catalog
            .get(seen, |c| c.placement.get(&place_key).cloned());
        let candidates = match kept {
            Some(c) => c,
            None => {
                let c = self.placement_candidates(product).await?;
                self.catalog.put(seen, |copies| {
                    copies.placement.insert(place_key, c.clone());
                });
                c
            }
        };
        // The counts the store keeps with every service change, all in one read: counting
        // the services themselves would cost more with every service ordered. Orders that
        // ask together share the read (`load_reads`).
        let ids: Vec<ServerId> = candidates.iter().map(|s| s.id).collect();
        let round = match self.load_reads.read(&self.store, &ids).await {
            Some(round) => round,
            None => std::sync::Arc::new(super::load_reads::Round::alone(
                self.store.server_loads(&ids).await?,
            )),
        };
        Ok(round.place(candidates, extra))
    }

    /// The enabled servers of the product's module (and group), from the store.
    async fn placement_candidates(&self, product: &Product) -> Result<Vec<Server>> {
        let mut candidates = Vec::new();
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
            candidates.extend(servers.items);
            match servers.next {
                Some(n) => page.after = Some(n),
                None => break,
            }
        }
        Ok(candidates)
    }

    /// Orders a service: stored `pending` with its create job (when the product sets up on
    /// order) in one transaction. Returns the service and that job.
    pub async fn create_service(&self, input: ServiceCreate) -> Result<Service> {
        Ok(self.order_service(input).await?.service)
    }

    /// [`Engine::create_service`], answering the create job too, and whether the order was
    /// placed before under its key (so this is the first one's service).
    pub async fn order_service(&self, input: ServiceCreate) -> Result<Ordered> {
        // An order placed again under its key is the service it placed the first time.
        if let Some(found) = self.ordered_before(input.order_key.as_deref()).await? {
            return Ok(found);
        }
        let order = self.prepare_order(input, &HashMap::new()).await?;
        let (service, job) = self
            .order_lane
            .store(&self.store, (order.new, order.job))
            .await?;
        self.announce_orders(&[(&service, job.as_ref())]).await;
        Ok(Ordered {
            service,
            job,
            replayed: false,
        })
    }

    /// Orders many services: each is checked on its own (one's field errors do not stop the
    /// others), and the valid ones are stored together in one transaction. Answers each
    /// order's result in the order given.
    pub async fn order_services(&self, inputs: Vec<ServiceCreate>) -> Result<Vec<Result<Ordered>>> {
        let mut results: Vec<Option<Result<Ordered>>> = Vec::with_capacity(inputs.len());
        let mut ready: Vec<(usize, PreparedOrder)> = Vec::new();
        let mut placed: HashMap<ServerId, i64> = HashMap::new();
        for input in inputs {
            let i = results.len();
            match self.ordered_before(input.order_key.as_deref()).await {
                Ok(Some(found)) => {
                    results.push(Some(Ok(found)));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            }
            match self.prepare_order(input, &placed).await {
                Ok(order) => {
                    *placed.entry(order.new.server_id).or_default() += 1;
                    results.push(None);
                    ready.push((i, order));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let rows: Vec<_> = ready
            .iter()
            .map(|(_, o)| (o.new.clone(), o.job.clone()))
            .collect();
        let stored = match self.store.insert_orders(&rows, announce_create).await {
            Ok(all) => all.into_iter().map(Ok).collect(),
            // One order conflicts with a record (a username or external id taken, perhaps
            // by another order of this batch): store each alone, so only that one fails.
            Err(provisio_store::StoreError::Conflict { .. }) => {
                let mut each = Vec::with_capacity(rows.len());
                for row in rows.chunks(1) {
                    each.push(
                        self.store
                            .insert_orders(row, announce_create)
                            .await
                            .map_err(EngineError::from)
                            .and_then(|mut one| {
                                one.pop().ok_or_else(|| {
                                    EngineError::Store(provisio_store::StoreError::Corrupt(
                                        "a stored order was not returned".into(),
                                    ))
                                })
                            }),
                    );
                }
                each
            }
            Err(e) => return Err(e.into()),
        };
        let announce: Vec<(&Service, Option<&provisio_core::job::Job>)> = stored
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|(s, j)| (s, j.as_ref()))
            .collect();
        self.announce_orders(&announce).await;
        for ((i, _), r) in ready.iter().zip(stored) {
            results[*i] = Some(r.map(|(service, job)| Ordered {
                service,
                job,
                replayed: false,
            }));
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every order has a result"))
            .collect())
    }

    /// The service an order placed under `key` made, with its create job, if there is one.
    async fn ordered_before(&self, key: Option<&str>) -> Result<Option<Ordered>> {
        let Some(key) = key else { return Ok(None) };
        let Some(service) = self.store.find_service_by_order_key(key).await? else {
            return Ok(None);
        };
        let jobs = self
            .store
            .list_jobs(
                &provisio_store::JobFilter {
                    service_id: Some(service.id),
                    ..Default::default()
                },
                PageRequest::first(1),
            )
            .await?;
        let job = jobs.items.into_iter().find(|j| j.action == Action::Create);
        Ok(Some(Ordered {
            service,
            job,
            replayed: true,
        }))
    }

    /// Counts the creates the stored orders queued and wakes the worker for them (their
    /// `service.create.before` events were stored with them, see [`announce_create`]).
    async fn announce_orders(&self, orders: &[(&Service, Option<&provisio_core::job::Job>)]) {
        let jobs: Vec<_> = orders.iter().filter_map(|(_, j)| *j).collect();
        if jobs.is_empty() {
            return;
        }
        self.count_enqueued(jobs).await;
        self.wake.notify_one();
    }

    /// Checks an order and makes the service and create job to store; `placed` counts the
    /// services a batch put on each server before this one.
    async fn prepare_order(
        &self,
        input: ServiceCreate,
        placed: &HashMap<ServerId, i64>,
    ) -> Result<PreparedOrder> {
        // One trace per order, for its create's gate calls and the create job.
        let trace =
            provisio_core::trace::TraceContext::in_trace(provisio_core::trace::TraceId::random());
        provisio_modules::trace::scope(trace, self.prepare_order_traced(input, placed)).await
    }

    async fn prepare_order_traced(
        &self,
        input: ServiceCreate,
        placed: &HashMap<ServerId, i64>,
    ) -> Result<PreparedOrder> {
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
            check_password(&mut p, pw.as_secret());
        }
        let invoice = opt_invoice(&mut p, "invoice", input.invoice.as_deref());
        let parent_invoice = opt_invoice(&mut p, "parent_invoice", input.parent_invoice.as_deref());
        let external_id = input
            .external_id
            .as_deref()
            .and_then(|e| p.take("external_id", ExternalId::parse(e)));
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
                    let placed = self.place(product, placed).await?;
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
        let password = input
            .password
            .map(Secret::into_secret)
            .unwrap_or_else(|| generate_password(16));
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
            external_id,
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
                external_id: new.external_id.clone(),
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
        Ok(PreparedOrder { new, job })
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
                check_password(&mut p, pw.as_secret());
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
        match &patch.external_id {
            crate::patch::Patch::Keep => {}
            crate::patch::Patch::Clear => service.external_id = None,
            crate::patch::Patch::Set(v) => {
                if let Some(e) = p.take("external_id", ExternalId::parse(v)) {
                    service.external_id = Some(e);
                }
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
            service.password = self.cipher.seal_str(pw.as_secret());
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
