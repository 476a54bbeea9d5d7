//! One sync of one server: pages of usage fetched in order while the previous page is
//! written, readings applied against each product's limits, and the policy acted on when
//! a service exceeds them.

use super::*;

impl Engine {
    pub(super) async fn policy_map(&self) -> Result<HashMap<ProductId, UsagePolicy>> {
        Ok(self
            .store
            .usage_policies()
            .await?
            .into_iter()
            .map(|p| (p.product_id, p.policy))
            .collect())
    }

    /// A product's limits: its effective settings and the nearest policy up its `extends`
    /// chain.
    pub(super) async fn product_limits(
        &self,
        id: ProductId,
        policies: &HashMap<ProductId, UsagePolicy>,
    ) -> Result<ProductLimits> {
        let view = self.get_product(&RecordRef::Id(id.0)).await?;
        let mut policy = policies.get(&id).cloned();
        let mut parent = view.product.extends;
        let mut hops = 0;
        while policy.is_none() && hops < 32 {
            let Some(p) = parent else { break };
            policy = policies.get(&p).cloned();
            parent = self.store.get_product(p).await?.and_then(|x| x.extends);
            hops += 1;
        }
        Ok(ProductLimits {
            settings: view.effective,
            policy,
        })
    }

    pub(super) async fn sync_server(
        self: &Arc<Self>,
        slot: usize,
        server: Server,
        progress: Progress,
        policies: Arc<HashMap<ProductId, UsagePolicy>>,
    ) {
        let t0 = Instant::now();
        let set = |f: &mut dyn FnMut(&mut ServerSync)| {
            let mut p = progress.lock().unwrap();
            f(&mut p[slot]);
            p[slot].duration_ms = t0.elapsed().as_millis() as u64;
        };
        set(&mut |s| s.state = "running".into());
        let result = self.sync_server_pages(&server, &set, &policies).await;
        set(&mut |s| match &result {
            Ok(()) => s.state = "done".into(),
            Err(e) => {
                s.state = "failed".into();
                s.errors.push(e.clone());
            }
        });
        let (pages, accounts) = {
            let p = progress.lock().unwrap();
            (p[slot].pages, p[slot].reported)
        };
        crate::metrics::usage_sync(
            server.name.as_str(),
            result.is_ok(),
            pages,
            accounts,
            t0.elapsed(),
        );
    }

    pub(super) async fn sync_server_pages(
        self: &Arc<Self>,
        server: &Server,
        set: SetProgress<'_>,
        policies: &Arc<HashMap<ProductId, UsagePolicy>>,
    ) -> std::result::Result<(), String> {
        let crate::jobs::call::Prepared {
            module,
            request: base,
        } = self.server_request(server, Action::Usage)?;
        let accounts = self
            .store
            .server_accounts(server.id)
            .await
            .map_err(|e| format!("loading the server's services failed: {e}"))?;
        let dir = Directory {
            by_name: accounts
                .into_iter()
                .map(|a| (a.username, (a.service_id, a.product_id, a.status)))
                .collect(),
        };
        let expected = dir.by_name.len() as u64;
        set(&mut |s| s.expected = expected);
        let period_start = self.options.usage.period.start(self.now());

        // Pages are fetched in order (each needs the previous cursor) while the previous
        // page is written: the remote's delay and the database's work overlap.
        let (tx, mut rx) = mpsc::channel::<ActionReply>(2);
        let writer = {
            let engine = self.clone();
            let policies = policies.clone();
            async move {
                let mut limits: HashMap<ProductId, Option<ProductLimits>> = HashMap::new();
                let mut totals = (0u64, 0u64, 0u64, Vec::<String>::new(), Vec::<String>::new());
                while let Some(reply) = rx.recv().await {
                    let r = engine
                        .write_page(&dir, &reply, period_start, &policies, &mut limits)
                        .await;
                    match r {
                        Ok(w) => {
                            totals.0 += w.updated;
                            totals.1 += w.unknown.len() as u64;
                            totals.2 += w.exceeded;
                            for u in w.unknown {
                                if totals.3.len() < 10 {
                                    totals.3.push(u);
                                }
                            }
                            totals.4.extend(w.errors);
                        }
                        Err(e) => {
                            totals.4.push(format!("writing usage failed: {e}"));
                            return Err(totals);
                        }
                    }
                }
                Ok(totals)
            }
        };
        let writer = tokio::spawn(provisio_store::inherit(writer));

        let mut cursor: Option<String> = None;
        let mut cursors =
            crate::paging::Cursors::new(self.options.usage.max_pages, "usage.max_pages");
        let pace = server
            .max_per_second
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
        let mut last_call: Option<Instant> = None;
        let mut failure = None;
        loop {
            if let (Some(p), Some(at)) = (pace, last_call) {
                let wait = p.saturating_sub(at.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let mut req = base.clone();
            req.params
                .insert("limit".into(), Value::from(self.options.usage.page_size));
            req.params
                .insert("since".into(), Value::String(period_start.to_rfc3339()));
            if let Some(c) = &cursor {
                req.params.insert("cursor".into(), Value::String(c.clone()));
            }
            last_call = Some(Instant::now());
            let reply = match self.call_read(module.as_ref(), &req).await {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            };
            let n = reply.usage.len() as u64;
            let next = reply.next.clone().filter(|n| !n.is_empty());
            set(&mut |s| {
                s.pages += 1;
                s.reported += n;
            });
            if tx.send(reply).await.is_err() {
                break;
            }
            match cursors.next(next) {
                Ok(Some(n)) => cursor = Some(n),
                Ok(None) => break,
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            }
        }
        drop(tx);
        let totals = match writer.await {
            Ok(Ok(t)) => t,
            Ok(Err(t)) => {
                failure.get_or_insert_with(|| t.4.last().cloned().unwrap_or_default());
                t
            }
            Err(e) => return Err(format!("the usage writer stopped: {e}")),
        };
        set(&mut |s| {
            s.services_updated = totals.0;
            s.unknown_usernames = totals.1;
            s.exceeded = totals.2;
            s.unknown_sample = totals.3.clone();
            s.errors.extend(totals.4.iter().cloned());
        });
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// A read-only module call (usage, list_accounts) with a timeout, tried again on a
    /// transient or unknown failure (reading twice is harmless).
    pub(crate) async fn call_read(
        &self,
        module: &dyn provisio_core::module::Module,
        req: &ActionRequest,
    ) -> std::result::Result<ActionReply, ModuleError> {
        let attempts = self.options.usage.page_attempts.max(1);
        let limit = self.options.usage.call_timeout;
        let mut delay = Duration::from_millis(500);
        let mut last = None;
        for attempt in 1..=attempts {
            let r = match tokio::time::timeout(limit, crate::jobs::call::guarded(module, req)).await
            {
                Ok(r) => r,
                Err(_) => Err(ModuleError::transient(format!(
                    "{}: the module did not answer within {}s",
                    req.action,
                    limit.as_secs()
                ))),
            };
            match r {
                Ok(reply) => return Ok(reply),
                Err(e) if e.kind == provisio_core::module::ErrorKind::Permanent => return Err(e),
                Err(e) => {
                    last = Some(e);
                    if attempt < attempts {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ModuleError::transient("no attempt was made")))
    }

    pub(super) async fn write_page(
        self: &Arc<Self>,
        dir: &Directory,
        reply: &ActionReply,
        period_start: DateTime<Utc>,
        policies: &HashMap<ProductId, UsagePolicy>,
        limits: &mut HashMap<ProductId, Option<ProductLimits>>,
    ) -> Result<PageWritten> {
        let mut out = PageWritten::default();
        let mut readings = Vec::new();
        let mut products: HashMap<ServiceId, ProductId> = HashMap::new();
        for report in &reply.usage {
            let Some(&(sid, pid, _)) = dir.by_name.get(&report.username) else {
                out.unknown.push(report.username.clone());
                continue;
            };
            products.insert(sid, pid);
            if let std::collections::hash_map::Entry::Vacant(slot) = limits.entry(pid) {
                let l = match self.product_limits(pid, policies).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        out.errors.push(format!("product {pid}: {e}"));
                        None
                    }
                };
                slot.insert(l);
            }
            let pl = limits.get(&pid).and_then(|l| l.as_ref());
            for (name, m) in &report.metrics {
                if !is_metric_name(name) || !m.used.is_finite() {
                    out.errors.push(format!(
                        "{}: metric {:?} skipped (names are [a-z][a-z0-9_]*, values finite)",
                        report.username,
                        name.chars().take(64).collect::<String>()
                    ));
                    continue;
                }
                let limit = match pl {
                    Some(pl) => pl.limit(name, m.limit),
                    None => m.limit,
                };
                readings.push(NewReading {
                    service_id: sid,
                    metric: name.clone(),
                    used: m.used,
                    limit: limit.filter(|l| l.is_finite()),
                    unit: m.unit.clone(),
                    period_start,
                });
            }
        }
        let applied = self.store.apply_usage(&readings).await?;
        let mut changed: Vec<ServiceId> = applied
            .iter()
            .filter(|a| a.changed)
            .map(|a| a.state.service_id)
            .collect();
        changed.sort_unstable();
        changed.dedup();
        out.updated = changed.len() as u64;
        for a in applied.iter().filter(|a| a.exceeded_now) {
            out.exceeded += 1;
            let Some(pid) = products.get(&a.state.service_id) else {
                continue;
            };
            let Some(policy) = limits
                .get(pid)
                .and_then(|l| l.as_ref())
                .and_then(|l| l.policy.clone())
            else {
                continue;
            };
            if let Err(e) = self
                .act_on_exceeding(a.state.service_id, &a.state.metric, &policy)
                .await
            {
                out.errors.push(format!(
                    "service {}: acting on exceeding {}: {e}",
                    a.state.service_id, a.state.metric
                ));
            }
        }
        Ok(out)
    }

    pub(super) async fn act_on_exceeding(
        &self,
        service: ServiceId,
        metric: &str,
        policy: &UsagePolicy,
    ) -> Result<()> {
        if !policy.metrics.is_empty() && !policy.metrics.iter().any(|m| m == metric) {
            return Ok(());
        }
        match &policy.on_exceed {
            None => Ok(()),
            Some(OnExceed::Suspend) => {
                let s = self.get_service(service).await?;
                if s.status != ServiceStatus::Active {
                    return Ok(());
                }
                self.request_action(
                    service,
                    Action::Suspend,
                    ActionInput {
                        reason: Some("usage".into()),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ())
            }
            Some(OnExceed::ChangePackage { product }) => self
                .request_action(
                    service,
                    Action::ChangePackage,
                    ActionInput {
                        product: Some(RecordRef::Name(product.clone())),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ()),
        }
    }
}

#[derive(Default)]
pub(super) struct PageWritten {
    updated: u64,
    unknown: Vec<String>,
    exceeded: u64,
    errors: Vec<String>,
}
