//! `collect`: chosen fields (dotted paths) of the services a filter selects, with their
//! client, product, server and usage; indexed filters go to the store, the rest are
//! checked per service while paging.

use super::*;

/// Services read per request for each one the page may hold (at most 10,000 rows at the
/// largest limit): filters checked per service cannot make one request read everything.
const SCAN_PER_LIMIT: u32 = 10;

const DEFAULT_FIELDS: [&str; 7] = [
    "service.username",
    "service.status",
    "service.invoice",
    "service.parent_invoice",
    "client.name",
    "product.name",
    "server.name",
];

/// The value at a dotted path of a document.
fn pick<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, seg| v.get(seg))
}

/// Sets a dotted path in a nested object.
fn put(out: &mut Map<String, Value>, path: &str, value: Value) {
    let mut segs = path.split('.').peekable();
    let mut cur = out;
    while let Some(seg) = segs.next() {
        if segs.peek().is_none() {
            cur.insert(seg.to_string(), value);
            return;
        }
        let next = cur
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        cur = next.as_object_mut().expect("made an object");
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

const ROOTS: [&str; 5] = ["service", "client", "product", "server", "usage"];

fn check_path(p: &mut Problems, field: &str, path: &str) {
    let root = path.split('.').next().unwrap_or("");
    if !ROOTS.contains(&root) || path.split('.').any(str::is_empty) {
        p.push(
            field,
            "path",
            format!(
                "'{path}' must be dotted and start with service., client., product., server. or usage."
            ),
        );
    }
}

/// Filters the store can apply with its indexes; the rest are checked per service.
#[derive(Default)]
struct Plan {
    store: ServiceFilter,
    rest: Vec<(String, String)>,
}

/// Per-request caches: a group of services shares few clients, products and servers.
#[derive(Default)]
struct Cache {
    clients: HashMap<ClientId, Value>,
    products: HashMap<ProductId, (Value, Settings)>,
    servers: HashMap<ServerId, Value>,
}

impl Engine {
    /// Every problem goes into `p`, with those of the caller, so all are reported at once.
    async fn plan_filters(
        &self,
        p: &mut Problems,
        filters: &BTreeMap<String, String>,
    ) -> Result<Plan> {
        let mut plan = Plan::default();
        for (k, v) in filters {
            let field = format!("filters.{k}");
            check_path(p, &field, k);
            let id = |p: &mut Problems| match v.parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    p.push(&field, "type", "must be an id (digits)");
                    None
                }
            };
            match k.as_str() {
                "service.status" => match ServiceStatus::parse(v) {
                    Some(s) => plan.store.status = Some(s),
                    None => p.push(&field, "enum", format!("'{v}' is not a service status")),
                },
                "service.invoice" => plan.store.invoice = Some(v.clone()),
                "service.parent_invoice" => plan.store.parent_invoice = Some(v.clone()),
                "service.username" => plan.store.username = Some(v.clone()),
                "service.client_id" | "client.id" => plan.store.client_id = id(p).map(ClientId),
                "service.product_id" | "product.id" => plan.store.product_id = id(p).map(ProductId),
                "service.server_id" | "server.id" => plan.store.server_id = id(p).map(ServerId),
                "product.name" => match self.store.get_product_by_name(v).await? {
                    Some(prod) => plan.store.product_id = Some(prod.id),
                    None => p.push(&field, "exists", format!("no product '{v}'")),
                },
                "server.name" => match self.store.get_server_by_name(v).await? {
                    Some(s) => plan.store.server_id = Some(s.id),
                    None => p.push(&field, "exists", format!("no server '{v}'")),
                },
                "service.suspended_since" => match parse_since(v) {
                    Ok(d) => plan.store.suspended_before = Some(since_cutoff(self.now(), d)),
                    Err(e) => p.push(&field, "duration", e),
                },
                "service.group" => plan.store.invoice_or_parent = Some(v.clone()),
                _ => plan.rest.push((k.clone(), v.clone())),
            }
        }
        Ok(plan)
    }

    /// The document `collect` picks fields from: the service and what it belongs to, as
    /// the API shows them (no secrets).
    async fn document(&self, s: &Service, cache: &mut Cache, with_usage: bool) -> Result<Value> {
        if let Entry::Vacant(e) = cache.clients.entry(s.client_id) {
            let c = self
                .store
                .get_client(s.client_id)
                .await?
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            e.insert(c);
        }
        if let Entry::Vacant(e) = cache.products.entry(s.product_id) {
            let v = self.get_product(&RecordRef::Id(s.product_id.0)).await?;
            let doc = json!({"id": v.product.id, "name": v.product.name.as_str(), "module": v.product.module});
            e.insert((doc, v.effective));
        }
        if let Entry::Vacant(e) = cache.servers.entry(s.server_id) {
            let doc = match self.store.get_server(s.server_id).await? {
                Some(sv) => json!({"id": sv.id, "name": sv.name.as_str(), "module": sv.module,
                                   "group": sv.group.as_str(), "enabled": sv.enabled}),
                None => Value::Null,
            };
            e.insert(doc);
        }
        let (product_doc, effective) = &cache.products[&s.product_id];
        let mut settings = effective.clone();
        for (k, v) in &s.product_overrides {
            settings.insert(k.clone(), v.clone());
        }
        let (settings, _) = redact_settings(&settings);
        let mut product = product_doc.clone();
        product["settings"] = Value::Object(settings);
        let mut service = crate::events::service_payload(s);
        let (overrides, _) = redact_settings(&s.product_overrides);
        service["product_overrides"] = Value::Object(overrides);
        service["suspended_at"] = json!(s.suspension.as_ref().map(|x| x.since));
        // Usage costs a read per service, so it is fetched only when asked for.
        let mut usage = Map::new();
        if with_usage {
            for u in self.store.service_usage(s.id).await? {
                usage.insert(
                    u.metric.clone(),
                    json!({"used": u.used, "limit": u.limit, "unit": u.unit,
                           "topup_used": u.topup_used, "period_start": u.period_start}),
                );
            }
        }
        Ok(json!({
            "service": service,
            "client": cache.clients[&s.client_id],
            "product": product,
            "server": cache.servers[&s.server_id],
            "usage": usage,
        }))
    }

    /// Chosen fields of the services the filters select, a page at a time (by service id).
    /// A page may be short, even empty, and still carry `next`: the request stopped after
    /// reading its share of services, and the caller continues from there.
    pub async fn collect(&self, q: &CollectQuery, page: PageRequest) -> Result<Page<Collected>> {
        let mut p = Problems::default();
        for (i, f) in q.fields.iter().enumerate() {
            check_path(&mut p, &format!("fields[{i}]"), f);
        }
        let mut plan = self.plan_filters(&mut p, &q.filters).await?;
        plan.store.scope = q.scope;
        p.finish()?;
        let fields: Vec<&str> = if q.fields.is_empty() {
            DEFAULT_FIELDS.to_vec()
        } else {
            q.fields.iter().map(String::as_str).collect()
        };
        let with_usage = fields.iter().any(|f| f.starts_with("usage."))
            || plan.rest.iter().any(|(k, _)| k.starts_with("usage."));
        let mut cache = Cache::default();
        let mut items = Vec::new();
        // Filters the store cannot apply may match few services: without a bound, one
        // request would read the whole table looking for a page of them.
        let budget = SCAN_PER_LIMIT.saturating_mul(page.limit.max(1));
        let mut scanned: u32 = 0;
        let mut scan = PageRequest {
            after: page.after,
            limit: PageRequest::MAX_LIMIT.min(budget),
        };
        loop {
            let got = self.store.list_services(&plan.store, scan).await?;
            scanned = scanned.saturating_add(got.items.len() as u32);
            for s in &got.items {
                let doc = self.document(s, &mut cache, with_usage).await?;
                let matches = plan
                    .rest
                    .iter()
                    .all(|(k, v)| pick(&doc, k).is_some_and(|x| as_text(x) == *v));
                if !matches {
                    continue;
                }
                let mut values = Map::new();
                for f in &fields {
                    put(
                        &mut values,
                        f,
                        pick(&doc, f).cloned().unwrap_or(Value::Null),
                    );
                }
                items.push(Collected {
                    service_id: s.id.0,
                    active: s.status == ServiceStatus::Active,
                    values: Value::Object(values),
                });
                if items.len() == page.limit as usize {
                    // More may follow: the caller continues after this service.
                    return Ok(Page {
                        items,
                        next: Some(s.id.0),
                    });
                }
            }
            match got.next {
                // A short page with a cursor: the caller continues after the last
                // service read, which did not match.
                Some(c) if scanned >= budget => {
                    return Ok(Page {
                        items,
                        next: Some(c),
                    })
                }
                Some(c) => {
                    scan.after = Some(c);
                    scan.limit = PageRequest::MAX_LIMIT.min(budget - scanned);
                }
                None => return Ok(Page { items, next: None }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_and_puts_dotted_paths() {
        let doc = json!({"product": {"settings": {"quota": 5000}}});
        assert_eq!(pick(&doc, "product.settings.quota"), Some(&json!(5000)));
        assert_eq!(pick(&doc, "product.name"), None);
        let mut out = Map::new();
        put(&mut out, "product.settings.quota", json!(1));
        put(&mut out, "service.username", json!("u"));
        assert_eq!(
            Value::Object(out),
            json!({"product": {"settings": {"quota": 1}}, "service": {"username": "u"}})
        );
    }
}
