//! The SQL both databases share. SQLite and PostgreSQL accept the same statements here
//! (`$n` parameters, `RETURNING`, partial indexes), so one body serves both pools; only
//! connection set-up, migrations and (later) job claiming differ per database.

/// Marks a worker as present (see `claim_tx`).
pub(crate) const PRESENCE_UPSERT: &str =
    "INSERT INTO queue_workers (owner, seen_at) VALUES ($1, $2) \
     ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at";

/// Orders per multi-row statement (14 parameters each, well under SQLite's bound).
pub(crate) const ORDERS_PER_STATEMENT: usize = 100;

/// How a new job's row names its service.
pub(crate) enum JobService<'a> {
    /// The id of a service stored before.
    Id(i64),
    /// The live service on this server with this username, inserted earlier in the same
    /// list of statements: at most one, by the partial unique index
    /// `ux_services_server_username`, which finds it.
    Live(i64, &'a str),
}

/// The services of `expected` orders, in the orders' order, from their inserted rows.
pub(crate) fn stored_services(
    expected: usize,
    mut rows: Vec<crate::rows::ServiceRow>,
) -> crate::Result<Vec<provisio_core::service::Service>> {
    if rows.len() != expected {
        return Err(crate::StoreError::Corrupt(format!(
            "{expected} services inserted, {} returned",
            rows.len()
        )));
    }
    rows.sort_by_key(crate::rows::ServiceRow::id);
    rows.into_iter()
        .map(provisio_core::service::Service::try_from)
        .collect()
}

/// Each service with its job, if it was ordered with one; `expected` jobs were inserted.
pub(crate) fn pair_orders(
    services: Vec<provisio_core::service::Service>,
    expected: usize,
    rows: Vec<crate::rows::JobRow>,
) -> crate::Result<
    Vec<(
        provisio_core::service::Service,
        Option<provisio_core::job::Job>,
    )>,
> {
    let mut jobs = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let job: provisio_core::job::Job = row.try_into()?;
        jobs.insert(job.service_id, job);
    }
    if jobs.len() != expected {
        return Err(crate::StoreError::Corrupt(format!(
            "{expected} jobs inserted, {} returned",
            jobs.len()
        )));
    }
    Ok(services
        .into_iter()
        .map(|s| {
            let job = jobs.remove(&s.id);
            (s, job)
        })
        .collect())
}

/// The announcement of orders stored without events (bulk fills, the store's own tests).
pub(crate) fn unannounced(
    _: &provisio_core::service::Service,
    _: Option<&provisio_core::job::Job>,
) -> Vec<provisio_core::event::NewEvent> {
    Vec::new()
}

/// Implements [`crate::Store`] for a type with a `pool: DbPool` field (reads; `DbPool` a
/// type the store's module names, whose references are `sqlx::Executor`s) and inherent
/// `writer()` (the pool writes go to), `backend_kind()`, `run_migrations()`,
/// `claim_conn()` and `begin_claim(conn)` (a claim's connection and its transaction),
/// `claim_once()` (a database's claim in one statement, if it has one), `clock_samples()`
/// and `LOCK_CLAUSE`.
/// Items given in braces after the types join the impl (a database's own methods).
macro_rules! impl_store {
    ($store:ty, $db:ty $(, { $($own:item)* })?) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            $($($own)*)?

            fn backend(&self) -> $crate::Backend {
                Self::backend_kind()
            }

            async fn migrate(&self) -> $crate::Result<()> {
                self.run_migrations().await
            }

            async fn pending_migrations(&self) -> $crate::Result<Vec<i64>> {
                let applied: Vec<(i64,)> =
                    sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(&self.pool)
                        .await?;
                let applied: std::collections::HashSet<i64> =
                    applied.into_iter().map(|(v,)| v).collect();
                Ok(Self::known_migrations()
                    .filter(|v| !applied.contains(v))
                    .collect())
            }

            async fn job_gauges(&self) -> $crate::Result<$crate::JobGauges> {
                let by_state: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
                        .fetch_all(&self.pool)
                        .await?;
                let (oldest,): (Option<i64>,) =
                    sqlx::query_as("SELECT MIN(run_after) FROM jobs WHERE state = 'pending'")
                        .fetch_one(&self.pool)
                        .await?;
                Ok($crate::JobGauges {
                    by_state,
                    oldest_pending_due: oldest.map($crate::rows::from_ts).transpose()?,
                })
            }

            async fn close(&self) {
                self.pool.close().await;
                self.writer().close().await;
                self.close_queue().await;
            }

            fn clock(&self) -> &$crate::Clock {
                &self.clock
            }

            async fn sync_clock(&self) -> $crate::Result<chrono::Duration> {
                let samples = self.clock_samples().await?;
                // Without a usable reading the last correction stays.
                let Some(offset) = $crate::offset_from(&samples) else {
                    return Ok(self.clock.offset());
                };
                self.clock.set_offset(offset);
                Ok(offset)
            }

            // ---- clients ----

            async fn insert_client(
                &self,
                c: &provisio_core::client::NewClient,
                announce: &[&str],
            ) -> $crate::Result<provisio_core::client::Client> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let client = insert_client_tx(&mut tx, self.clock.now(), c, announce).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(client)
            }

            async fn insert_clients(
                &self,
                clients: &[provisio_core::client::NewClient],
                announce: &[&str],
            ) -> $crate::Result<Vec<provisio_core::client::Client>> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let mut out = Vec::with_capacity(clients.len());
                for c in clients {
                    out.push(insert_client_tx(&mut tx, self.clock.now(), c, announce).await?);
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok(out)
            }

            async fn find_client_by_order_key(
                &self,
                key: &str,
            ) -> $crate::Result<Option<provisio_core::client::Client>> {
                one_by!(&self.pool, $crate::rows::ClientRow, "SELECT * FROM clients WHERE order_key = $1", key)
            }

            async fn get_client(
                &self,
                id: provisio_core::ClientId,
            ) -> $crate::Result<Option<provisio_core::client::Client>> {
                one_by!(&self.pool, $crate::rows::ClientRow, "SELECT * FROM clients WHERE id = $1", id.0)
            }

            async fn get_clients(
                &self,
                ids: &[provisio_core::ClientId],
            ) -> $crate::Result<Vec<provisio_core::client::Client>> {
                let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
                by_ids::<$crate::rows::ClientRow, _>(&self.pool, "clients", &ids).await
            }

            async fn update_client(
                &self,
                c: &provisio_core::client::Client,
                announce: &[&str],
            ) -> $crate::Result<provisio_core::client::Client> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ClientRow> = sqlx::query_as(
                    // balance_minor is left alone: only transactions move it.
                    "UPDATE clients SET name = $1, email = $2, status = $3, \
                     currency = $4, custom_fields = $5, updated_at = $6, reseller_id = $7, external_id = $9 WHERE id = $8 RETURNING *",
                )
                .bind(c.name.as_str())
                .bind(c.email.as_str())
                .bind(c.status.as_str())
                .bind(c.currency.as_str())
                .bind(sqlx::types::Json(&c.custom_fields))
                .bind($crate::rows::ts(self.clock.now()))
                .bind(c.reseller_id.map(|r| r.0))
                .bind(c.id.0)
                .bind(c.external_id.as_ref().map(|v| v.as_str()))
                .fetch_optional(&mut *tx)
                .await?;
                let client: provisio_core::client::Client =
                    row.ok_or($crate::StoreError::NotFound)?.try_into()?;
                announce_client(&mut tx, self.clock.now(), &client, announce).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(client)
            }

            async fn delete_client(
                &self,
                id: provisio_core::ClientId,
                announce: &[&str],
            ) -> $crate::Result<bool> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ClientRow> =
                    sqlx::query_as("DELETE FROM clients WHERE id = $1 RETURNING *")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else {
                    return Ok(false);
                };
                let client: provisio_core::client::Client = row.try_into()?;
                announce_client(&mut tx, self.clock.now(), &client, announce).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(true)
            }

            async fn list_clients(
                &self,
                f: &$crate::ClientFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::client::Client>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM clients WHERE 1 = 1");
                if let Some(s) = f.status {
                    qb.push(" AND status = ").push_bind(s.as_str());
                }
                if let Some(e) = &f.email {
                    qb.push(" AND email = ").push_bind(e.as_str());
                }
                if let Some(e) = &f.external_id {
                    qb.push(" AND external_id = ").push_bind(e.as_str());
                }
                match f.scope {
                    Some(provisio_core::access::Scope::Client(c)) => {
                        qb.push(" AND id = ").push_bind(c.0);
                    }
                    Some(provisio_core::access::Scope::Reseller(r)) => {
                        qb.push(" AND reseller_id = ").push_bind(r.0);
                    }
                    None => {}
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::ClientRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |c: &provisio_core::client::Client| c.id.0)
            }

            // ---- balance transactions ----

            async fn apply_transaction(
                &self,
                client: provisio_core::ClientId,
                new: &provisio_core::client::NewTransaction,
            ) -> $crate::Result<$crate::TransactionOutcome> {
                let delta = new.delta();
                // The balance may move only while it stays within i64.
                let (low, high) = if delta >= 0 {
                    (i64::MIN, i64::MAX - delta)
                } else {
                    (i64::MIN - delta, i64::MAX)
                };
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                if let Some(t) = find_transaction(&mut tx, client, &new.idempotency_key).await? {
                    let c = get_client_tx(&mut tx, client).await?;
                    tx.commit().await?;
                    wr.durable().await?;
                    return Ok($crate::TransactionOutcome { transaction: t, client: c, replayed: true });
                }
                // One statement reads and writes the balance, so concurrent transactions of
                // a client queue on its row instead of overwriting each other.
                let row: Option<$crate::rows::ClientRow> = sqlx::query_as(
                    "UPDATE clients SET balance_minor = balance_minor + $1, updated_at = $2 \
                     WHERE id = $3 AND balance_minor BETWEEN $4 AND $5 RETURNING *",
                )
                .bind(delta)
                .bind(now)
                .bind(client.0)
                .bind(low)
                .bind(high)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    // Missing, or the balance would overflow.
                    get_client_tx(&mut tx, client).await?;
                    return Err($crate::StoreError::OutOfRange { field: "amount_minor".into() });
                };
                let after: provisio_core::client::Client = row.try_into()?;
                let inserted: Result<$crate::rows::TransactionRow, sqlx::Error> = sqlx::query_as(
                    "INSERT INTO client_transactions (client_id, kind, amount_minor, balance_after, \
                     idempotency_key, description, created_at, actor) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                )
                .bind(client.0)
                .bind(new.kind.as_str())
                .bind(new.amount_minor)
                .bind(after.balance_minor)
                .bind(&new.idempotency_key)
                .bind(new.description.as_deref())
                .bind(now)
                .bind($crate::actor::stored())
                .fetch_one(&mut *tx)
                .await;
                let transaction: provisio_core::client::Transaction = match inserted {
                    Ok(row) => row.try_into()?,
                    Err(e)
                        if e.as_database_error().is_some_and(|d| {
                            d.kind() == sqlx::error::ErrorKind::UniqueViolation
                        }) =>
                    {
                        // A concurrent request with the same key committed first: undo our
                        // balance change and answer with its transaction.
                        tx.rollback().await?;
                        let mut tx = wr.begin().await?;
                        let t = find_transaction(&mut tx, client, &new.idempotency_key)
                            .await?
                            .ok_or($crate::StoreError::NotFound)?;
                        let c = get_client_tx(&mut tx, client).await?;
                        tx.commit().await?;
                        wr.durable().await?;
                        return Ok($crate::TransactionOutcome { transaction: t, client: c, replayed: true });
                    }
                    Err(e) => return Err(e.into()),
                };
                let before = transaction.balance_before();
                if let Some(kind) = provisio_core::client::balance_crossing(before, after.balance_minor) {
                    let event = provisio_core::event::NewEvent::new(
                        kind,
                        format!("client:{}", client),
                        serde_json::json!({
                            "client": &after,
                            "transaction": &transaction,
                            "balance_before": before,
                            "balance_after": after.balance_minor,
                        }),
                    );
                    insert_events_tx(&mut tx, self.clock.now(), std::slice::from_ref(&event)).await?;
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok($crate::TransactionOutcome { transaction, client: after, replayed: false })
            }

            async fn list_transactions(
                &self,
                client: provisio_core::ClientId,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::client::Transaction>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT * FROM client_transactions WHERE client_id = ",
                );
                qb.push_bind(client.0);
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::TransactionRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |t: &provisio_core::client::Transaction| t.id.0)
            }

            // ---- servers ----

            async fn insert_server(
                &self,
                s: &provisio_core::server::NewServer,
            ) -> $crate::Result<provisio_core::server::Server> {
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: $crate::rows::ServerRow = sqlx::query_as(
                    "INSERT INTO servers (name, module, server_group, settings, max_concurrent, max_per_second, enabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
                )
                .bind(s.name.as_str())
                .bind(&s.module)
                .bind(s.group.as_str())
                .bind(sqlx::types::Json(&s.settings))
                .bind(i64::from(s.max_concurrent))
                .bind(s.max_per_second.map(i64::from))
                .bind(s.enabled)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let server: provisio_core::server::Server = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "server.created", &$crate::rows::server_record(&server)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(server)
            }

            async fn get_server(
                &self,
                id: provisio_core::ServerId,
            ) -> $crate::Result<Option<provisio_core::server::Server>> {
                one_by!(&self.pool, $crate::rows::ServerRow, "SELECT * FROM servers WHERE id = $1", id.0)
            }

            async fn get_server_by_name(
                &self,
                name: &str,
            ) -> $crate::Result<Option<provisio_core::server::Server>> {
                one_by!(&self.pool, $crate::rows::ServerRow, "SELECT * FROM servers WHERE name = $1", name)
            }

            async fn update_server(
                &self,
                s: &provisio_core::server::Server,
            ) -> $crate::Result<provisio_core::server::Server> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ServerRow> = sqlx::query_as(
                    "UPDATE servers SET name = $1, module = $2, server_group = $3, settings = $4, \
                     max_concurrent = $5, max_per_second = $6, enabled = $7, updated_at = $8 \
                     WHERE id = $9 RETURNING *",
                )
                .bind(s.name.as_str())
                .bind(&s.module)
                .bind(s.group.as_str())
                .bind(sqlx::types::Json(&s.settings))
                .bind(i64::from(s.max_concurrent))
                .bind(s.max_per_second.map(i64::from))
                .bind(s.enabled)
                .bind($crate::rows::ts(self.clock.now()))
                .bind(s.id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let server: provisio_core::server::Server =
                    row.ok_or($crate::StoreError::NotFound)?.try_into()?;
                announce_record(&mut tx, self.clock.now(), "server.updated", &$crate::rows::server_record(&server)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(server)
            }

            async fn delete_server(&self, id: provisio_core::ServerId) -> $crate::Result<bool> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ServerRow> =
                    sqlx::query_as("DELETE FROM servers WHERE id = $1 RETURNING *")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { return Ok(false) };
                let server: provisio_core::server::Server = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "server.deleted", &$crate::rows::server_record(&server)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(true)
            }

            async fn list_servers(
                &self,
                f: &$crate::ServerFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::server::Server>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM servers WHERE 1 = 1");
                if let Some(m) = &f.module {
                    qb.push(" AND module = ").push_bind(m.as_str());
                }
                if let Some(g) = &f.group {
                    qb.push(" AND server_group = ").push_bind(g.as_str());
                }
                if let Some(e) = f.enabled {
                    qb.push(" AND enabled = ").push_bind(e);
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::ServerRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |s: &provisio_core::server::Server| s.id.0)
            }

            // ---- products ----

            async fn insert_product(
                &self,
                p: &provisio_core::product::NewProduct,
            ) -> $crate::Result<provisio_core::product::Product> {
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: $crate::rows::ProductRow = sqlx::query_as(
                    "INSERT INTO products (name, module, extends, server_group, settings, auto_setup, client_fields, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
                )
                .bind(p.name.as_str())
                .bind(&p.module)
                .bind(p.extends.map(|e| e.0))
                .bind(p.server_group.as_ref().map(|g| g.as_str()))
                .bind(sqlx::types::Json(&p.settings))
                .bind(p.auto_setup.as_str())
                .bind(sqlx::types::Json(&p.client_fields))
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let product: provisio_core::product::Product = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "product.created", &$crate::rows::product_record(&product)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(product)
            }

            async fn get_product(
                &self,
                id: provisio_core::ProductId,
            ) -> $crate::Result<Option<provisio_core::product::Product>> {
                one_by!(&self.pool, $crate::rows::ProductRow, "SELECT * FROM products WHERE id = $1", id.0)
            }

            async fn get_product_by_name(
                &self,
                name: &str,
            ) -> $crate::Result<Option<provisio_core::product::Product>> {
                one_by!(&self.pool, $crate::rows::ProductRow, "SELECT * FROM products WHERE name = $1", name)
            }

            async fn update_product(
                &self,
                p: &provisio_core::product::Product,
            ) -> $crate::Result<provisio_core::product::Product> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ProductRow> = sqlx::query_as(
                    "UPDATE products SET name = $1, module = $2, extends = $3, server_group = $4, \
                     settings = $5, auto_setup = $6, client_fields = $7, updated_at = $8 WHERE id = $9 RETURNING *",
                )
                .bind(p.name.as_str())
                .bind(&p.module)
                .bind(p.extends.map(|e| e.0))
                .bind(p.server_group.as_ref().map(|g| g.as_str()))
                .bind(sqlx::types::Json(&p.settings))
                .bind(p.auto_setup.as_str())
                .bind(sqlx::types::Json(&p.client_fields))
                .bind($crate::rows::ts(self.clock.now()))
                .bind(p.id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let product: provisio_core::product::Product =
                    row.ok_or($crate::StoreError::NotFound)?.try_into()?;
                announce_record(&mut tx, self.clock.now(), "product.updated", &$crate::rows::product_record(&product)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(product)
            }

            async fn delete_product(&self, id: provisio_core::ProductId) -> $crate::Result<bool> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ProductRow> =
                    sqlx::query_as("DELETE FROM products WHERE id = $1 RETURNING *")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { return Ok(false) };
                let product: provisio_core::product::Product = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "product.deleted", &$crate::rows::product_record(&product)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(true)
            }

            async fn list_products(
                &self,
                f: &$crate::ProductFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::product::Product>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM products WHERE 1 = 1");
                if let Some(m) = &f.module {
                    qb.push(" AND module = ").push_bind(m.as_str());
                }
                if let Some(e) = f.extends {
                    qb.push(" AND extends = ").push_bind(e.0);
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::ProductRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |p: &provisio_core::product::Product| p.id.0)
            }

            // ---- services ----

            async fn insert_service(
                &self,
                s: &provisio_core::service::NewService,
            ) -> $crate::Result<provisio_core::service::Service> {
                Ok(self.insert_service_with_job(s, None).await?.0)
            }

            async fn get_service(
                &self,
                id: provisio_core::ServiceId,
            ) -> $crate::Result<Option<provisio_core::service::Service>> {
                one_by!(&self.pool, $crate::rows::ServiceRow, "SELECT * FROM services WHERE id = $1", id.0)
            }

            async fn find_service_by_order_key(
                &self,
                key: &str,
            ) -> $crate::Result<Option<provisio_core::service::Service>> {
                one_by!(&self.pool, $crate::rows::ServiceRow, "SELECT * FROM services WHERE order_key = $1", key)
            }

            async fn get_services(
                &self,
                ids: &[provisio_core::ServiceId],
            ) -> $crate::Result<Vec<provisio_core::service::Service>> {
                let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
                by_ids::<$crate::rows::ServiceRow, _>(&self.pool, "services", &ids).await
            }

            async fn update_service(
                &self,
                s: &provisio_core::service::Service,
            ) -> $crate::Result<provisio_core::service::Service> {
                let susp = s.suspension.as_ref();
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows::ServiceRow> = sqlx::query_as(
                    "UPDATE services SET client_id = $1, product_id = $2, server_id = $3, username = $4, \
                     password = $5, status = $6, suspend_reason = $7, suspended_at = $8, suspended_until = $9, \
                     invoice = $10, parent_invoice = $11, settings = $12, outputs = $13, updated_at = $14, \
                     product_overrides = $16, external_id = $17 WHERE id = $15 RETURNING *",
                )
                .bind(s.client_id.0)
                .bind(s.product_id.0)
                .bind(s.server_id.0)
                .bind(s.username.as_str())
                .bind(&s.password.0)
                .bind(s.status.as_str())
                .bind(susp.map(|x| x.reason.as_str().to_string()))
                .bind(susp.map(|x| $crate::rows::ts(x.since)))
                .bind(susp.and_then(|x| x.until).map($crate::rows::ts))
                .bind(s.invoice.as_ref().map(|v| v.as_str()))
                .bind(s.parent_invoice.as_ref().map(|v| v.as_str()))
                .bind(sqlx::types::Json(&s.settings))
                .bind(sqlx::types::Json(&s.outputs))
                .bind($crate::rows::ts(self.clock.now()))
                .bind(s.id.0)
                .bind(sqlx::types::Json(&s.product_overrides))
                .bind(s.external_id.as_ref().map(|v| v.as_str()))
                .fetch_optional(&mut *tx)
                .await?;
                let service: provisio_core::service::Service =
                    row.ok_or($crate::StoreError::NotFound)?.try_into()?;
                let record = (
                    format!("service:{}", service.id),
                    serde_json::json!({"service": service.event_payload()}),
                );
                announce_record(&mut tx, self.clock.now(), "service.updated", &record).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(service)
            }

            async fn delete_service(&self, id: provisio_core::ServiceId) -> $crate::Result<bool> {
                let r = sqlx::query("DELETE FROM services WHERE id = $1")
                    .bind(id.0)
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn list_services(
                &self,
                f: &$crate::ServiceFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::service::Service>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM services WHERE 1 = 1");
                service_filter(&mut qb, f);
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::ServiceRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |s: &provisio_core::service::Service| s.id.0)
            }

            async fn count_services(&self, f: &$crate::ServiceFilter) -> $crate::Result<i64> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM services WHERE 1 = 1");
                service_filter(&mut qb, f);
                let (n,): (i64,) = qb.build_query_as().fetch_one(&self.pool).await?;
                Ok(n)
            }

            async fn server_loads(
                &self,
                servers: &[provisio_core::ServerId],
            ) -> $crate::Result<std::collections::HashMap<provisio_core::ServerId, i64>> {
                if servers.is_empty() {
                    return Ok(Default::default());
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT server_id, CAST(SUM(live_services) AS BIGINT) FROM server_loads WHERE server_id IN (",
                );
                let mut sep = qb.separated(", ");
                for s in servers {
                    sep.push_bind(s.0);
                }
                // PostgreSQL keeps a server's count in shards (migration 0022); SQLite in one row.
                qb.push(") GROUP BY server_id");
                let rows: Vec<(i64, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|(s, n)| (provisio_core::ServerId(s), n))
                    .collect())
            }

            // ---- jobs ----

            async fn insert_service_with_job(
                &self,
                s: &provisio_core::service::NewService,
                job: Option<&provisio_core::job::NewJob>,
            ) -> $crate::Result<(provisio_core::service::Service, Option<provisio_core::job::Job>)> {
                let mut stored = self
                    .insert_orders(&[(s.clone(), job.cloned())], $crate::sql::unannounced)
                    .await?;
                stored
                    .pop()
                    .ok_or_else(|| $crate::StoreError::Corrupt("a stored order was not returned".into()))
            }

            async fn insert_services_with_jobs(
                &self,
                orders: &[(provisio_core::service::NewService, Option<provisio_core::job::NewJob>)],
            ) -> $crate::Result<Vec<(provisio_core::service::Service, Option<provisio_core::job::Job>)>> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let out = orders_tx(&mut tx, self.clock.now(), orders, $crate::sql::unannounced, Self::ROW_LOCK).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(out)
            }

            async fn insert_orders(
                &self,
                orders: &[(provisio_core::service::NewService, Option<provisio_core::job::NewJob>)],
                announce: $crate::Announce,
            ) -> $crate::Result<Vec<(provisio_core::service::Service, Option<provisio_core::job::Job>)>> {
                if orders.is_empty() {
                    return Ok(Vec::new());
                }
                self.store_orders(orders, announce).await
            }

            async fn enqueue_job(
                &self,
                service_id: provisio_core::ServiceId,
                job: &provisio_core::job::NewJob,
                events: &[provisio_core::event::NewEvent],
            ) -> $crate::Result<provisio_core::job::Job> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let j = insert_job(&mut tx, self.clock.now(), service_id, job).await?;
                insert_events_tx(&mut tx, self.clock.now(), events).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(j)
            }

            async fn enqueue_jobs(
                &self,
                jobs: &[(provisio_core::ServiceId, provisio_core::job::NewJob, Vec<provisio_core::event::NewEvent>)],
            ) -> $crate::Result<Vec<provisio_core::job::Job>> {
                let now = $crate::rows::ts(self.clock.now());
                let mut out = Vec::with_capacity(jobs.len());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                // Many rows per statement: a group operation queues thousands, and every
                // statement on the one writer delays the worker's next turn.
                for chunk in jobs.chunks(200) {
                    let by_id: Vec<_> = chunk
                        .iter()
                        .map(|(service, j, _)| ($crate::sql::JobService::Id(service.0), j))
                        .collect();
                    let mut qb = sqlx::QueryBuilder::<$db>::new("");
                    push_jobs_insert(&mut qb, now, &by_id);
                    let rows: Vec<$crate::rows::JobRow> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    // RETURNING promises no order: match rows to jobs by key, and jobs that
                    // share a key in id order (rows are numbered in the order of VALUES).
                    let mut stored = rows
                        .into_iter()
                        .map(TryInto::try_into)
                        .collect::<$crate::Result<Vec<provisio_core::job::Job>>>()?;
                    stored.sort_by_key(|j| j.id);
                    let mut by_key: std::collections::HashMap<String, std::collections::VecDeque<provisio_core::job::Job>> =
                        std::collections::HashMap::with_capacity(stored.len());
                    for job in stored {
                        by_key.entry(job.idempotency_key.clone()).or_default().push_back(job);
                    }
                    for (_, j, _) in chunk {
                        out.push(by_key.get_mut(&j.idempotency_key).and_then(|q| q.pop_front()).ok_or_else(|| {
                            $crate::StoreError::Corrupt("a queued job was not returned".into())
                        })?);
                    }
                    let events: Vec<_> = chunk.iter().flat_map(|(_, _, e)| e.iter().cloned()).collect();
                    insert_events_tx(&mut tx, self.clock.now(), &events).await?;
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok(out)
            }

            async fn insert_refused_job(
                &self,
                service_id: provisio_core::ServiceId,
                job: &provisio_core::job::NewJob,
                message: &str,
            ) -> $crate::Result<provisio_core::job::Job> {
                let now = self.clock.now();
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let j = insert_job(&mut tx, self.clock.now(), service_id, job).await?;
                let row: $crate::rows::JobRow = sqlx::query_as(
                    "UPDATE jobs SET state = 'cancelled', last_error = $1, error_kind = 'permanent', \
                     finished_at = $2, updated_at = $2 WHERE id = $3 RETURNING *",
                )
                .bind(message)
                .bind($crate::rows::ts(now))
                .bind(j.id.0)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, message) \
                     VALUES ($1, 0, $2, 0, 'forbidden', $3)",
                )
                .bind(j.id.0)
                .bind($crate::rows::ts(now))
                .bind(message)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                wr.durable().await?;
                row.try_into()
            }

            async fn get_job(
                &self,
                id: provisio_core::job::JobId,
            ) -> $crate::Result<Option<provisio_core::job::Job>> {
                one_by!(&self.pool, $crate::rows::JobRow, "SELECT * FROM jobs WHERE id = $1", id.0)
            }

            async fn get_jobs(
                &self,
                ids: &[provisio_core::job::JobId],
            ) -> $crate::Result<Vec<provisio_core::job::Job>> {
                let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
                by_ids::<$crate::rows::JobRow, _>(&self.pool, "jobs", &ids).await
            }

            async fn list_jobs(
                &self,
                f: &$crate::JobFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::job::Job>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM jobs WHERE 1 = 1");
                if let Some(s) = f.state {
                    // A literal (the state names are a closed set of identifiers), so that a
                    // partial index on one state (`ix_jobs_failed_by`) is seen to apply:
                    // SQLite's planner cannot tell from a bound value.
                    qb.push(" AND state = '").push(s.as_str()).push("'");
                }
                if f.open_only {
                    qb.push(" AND state IN ('pending', 'running')");
                }
                if let Some(s) = f.server_id {
                    qb.push(" AND server_id = ").push_bind(s.0);
                }
                if let Some(s) = f.service_id {
                    qb.push(" AND service_id = ").push_bind(s.0);
                }
                if let Some(a) = &f.action {
                    qb.push(" AND action = ").push_bind(a.clone());
                }
                if let Some(k) = &f.error_kind {
                    qb.push(" AND error_kind = ").push_bind(k.clone());
                }
                if let Some(t) = f.created_before {
                    qb.push(" AND created_at < ").push_bind($crate::rows::ts(t));
                }
                if let Some(scope) = f.scope {
                    qb.push(" AND service_id IN (SELECT id FROM services WHERE 1 = 1");
                    scope_services(&mut qb, scope);
                    qb.push(")");
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::JobRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |j: &provisio_core::job::Job| j.id.0)
            }

            async fn job_attempts(
                &self,
                id: provisio_core::job::JobId,
            ) -> $crate::Result<Vec<provisio_core::job::Attempt>> {
                let rows: Vec<$crate::rows::AttemptRow> =
                    sqlx::query_as("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY id")
                        .bind(id.0)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn claim_ahead(
                &self,
                req: &$crate::ClaimRequest<'_>,
            ) -> $crate::Result<$crate::Claimed> {
                if let Some(jobs) = self.claim_once(req).await? {
                    return Ok(jobs);
                }
                let asked = std::time::Instant::now();
                let mut conn = self.claim_conn().await?;
                let mut tx = Self::begin_claim(&mut conn).await?;
                // The lease starts when the claim gets its turn: under load the wait for a
                // connection and for the other claimers must not eat into it.
                let waited = chrono::Duration::from_std(asked.elapsed()).unwrap_or_default();
                let req = $crate::ClaimRequest {
                    now: req.now + waited,
                    lease_until: req.lease_until + waited,
                    ..req.clone()
                };
                let jobs = claim_tx(&mut tx, &req, Self::LOCK_CLAUSE).await?;
                tx.commit().await?;
                conn.ended_cleanly();
                Ok(jobs)
            }

            async fn queue_presence(
                &self,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
                present: bool,
            ) -> $crate::Result<()> {
                if present {
                    sqlx::query($crate::sql::PRESENCE_UPSERT)
                        .bind(owner)
                        .bind($crate::rows::ts(now))
                        .execute(self.writer())
                        .await?;
                } else {
                    sqlx::query("DELETE FROM queue_workers WHERE owner = $1")
                        .bind(owner)
                        .execute(self.writer())
                        .await?;
                }
                Ok(())
            }

            async fn renew_leases(
                &self,
                owner: &str,
                ids: &[provisio_core::job::JobId],
                until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let mut total = 0;
                for chunk in ids.chunks(500) {
                    // Rows locked by an outcome write (the call is over) or by another
                    // node taking an expired lease over are skipped, not waited for: one
                    // slow write must not hold up the renewal of every live job.
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE jobs SET lease_until = ");
                    qb.push_bind($crate::rows::ts(until))
                        .push(" WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_owner = ")
                        .push_bind(owner);
                    $crate::push_ids(&mut qb, chunk);
                    qb.push(Self::LOCK_CLAUSE).push(")");
                    total += qb.build().execute(self.writer()).await?.rows_affected();
                }
                Ok(total)
            }

            async fn release_jobs(
                &self,
                owner: &str,
                ids: &[provisio_core::job::JobId],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                hand_back(self.writer(), owner, ids, now, false).await
            }

            async fn release_standby(
                &self,
                owner: &str,
                ids: &[provisio_core::job::JobId],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                hand_back(self.writer(), owner, ids, now, true).await
            }

            async fn requeue_expired(&self, now: chrono::DateTime<chrono::Utc>) -> $crate::Result<u64> {
                let r = sqlx::query(
                    "UPDATE jobs SET state = 'pending', needs_lookup = TRUE, lease_owner = NULL, \
                     lease_until = NULL, updated_at = $1 WHERE state = 'running' AND lease_until < $2",
                )
                .bind($crate::rows::ts(now))
                .bind($crate::rows::ts(now))
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected())
            }

            async fn finish_jobs(&self, updates: &[$crate::JobUpdate]) -> $crate::Result<Vec<bool>> {
                let mut wr = self.queue_write().await?;
                let mut tx = wr.begin().await?;
                let applied = finish_tx(&mut tx, self.clock.now(), updates, Self::ROW_LOCK).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(applied)
            }

            async fn retry_job(
                &self,
                id: provisio_core::job::JobId,
                now: chrono::DateTime<chrono::Utc>,
                extra_attempts: u32,
            ) -> $crate::Result<Option<provisio_core::job::Job>> {
                let row: Option<$crate::rows::JobRow> = sqlx::query_as(
                    "UPDATE jobs SET state = 'pending', run_after = $1, max_attempts = attempts + $2, \
                     updated_at = $3, finished_at = NULL WHERE id = $4 AND state = 'failed' RETURNING *",
                )
                .bind($crate::rows::ts(now))
                .bind(i64::from(extra_attempts))
                .bind($crate::rows::ts(now))
                .bind(id.0)
                .fetch_optional(self.writer())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn resolve_job(
                &self,
                id: provisio_core::job::JobId,
                note: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<provisio_core::job::Job>> {
                let row: Option<$crate::rows::JobRow> = sqlx::query_as(
                    "UPDATE jobs SET state = 'resolved', note = $1, updated_at = $2, finished_at = $3 \
                     WHERE id = $4 AND state = 'failed' RETURNING *",
                )
                .bind(note)
                .bind($crate::rows::ts(now))
                .bind($crate::rows::ts(now))
                .bind(id.0)
                .fetch_optional(self.writer())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn due_unsuspends(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<provisio_core::service::Service>> {
                let rows: Vec<$crate::rows::ServiceRow> = sqlx::query_as(
                    "SELECT * FROM services s WHERE s.status = 'suspended' AND s.suspended_until IS NOT NULL \
                     AND s.suspended_until <= $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.service_id = s.id \
                     AND j.state IN ('pending', 'running')) ORDER BY s.id LIMIT $2",
                )
                .bind($crate::rows::ts(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            // ---- events ----

            async fn insert_events(
                &self,
                events: &[provisio_core::event::NewEvent],
            ) -> $crate::Result<()> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                insert_events_tx(&mut tx, self.clock.now(), events).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(())
            }

            async fn list_events(
                &self,
                f: &$crate::EventFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::event::Event>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM events WHERE 1 = 1");
                if !f.types.is_empty() {
                    // LIKE narrows the scan; the exact wildcard rules are applied below.
                    qb.push(" AND (");
                    let mut sep = qb.separated(" OR ");
                    for p in &f.types {
                        sep.push("type LIKE ");
                        sep.push_bind_unseparated(p.as_str().replace('*', "%"));
                    }
                    qb.push(")");
                }
                if let Some(s) = &f.subject {
                    qb.push(" AND subject = ").push_bind(s.as_str());
                }
                if let Some(t) = f.since {
                    qb.push(" AND at >= ").push_bind($crate::rows::ts(t));
                }
                if let Some(t) = f.until {
                    qb.push(" AND at < ").push_bind($crate::rows::ts(t));
                }
                if let Some(a) = &f.actor {
                    // `key:12` matches `key:12:NAME`: the name may have changed since.
                    qb.push(" AND (actor = ").push_bind(a.as_str())
                        .push(" OR actor LIKE ").push_bind(format!("{a}:%")).push(")");
                }
                if let Some(scope) = f.scope {
                    // Service events name their service as `service:ID`; a scoped key sees
                    // those of its services and no others.
                    qb.push(" AND subject IN (SELECT 'service:' || id FROM services WHERE 1 = 1");
                    scope_services(&mut qb, scope);
                    qb.push(")");
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::EventRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                let scanned = rows.len();
                let mut events = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<Vec<provisio_core::event::Event>>>()?;
                // The cursor follows what was scanned, not what matched, so a page may be
                // short but paging still reaches every event.
                let next = (scanned > page.limit as usize).then(|| events[page.limit as usize - 1].id.0);
                events.truncate(page.limit as usize);
                if !f.types.is_empty() {
                    events.retain(|e| f.types.iter().any(|p| p.matches(&e.kind)));
                }
                Ok(provisio_core::page::Page { items: events, next })
            }

            async fn purge_events(&self, before: chrono::DateTime<chrono::Utc>) -> $crate::Result<u64> {
                let r = sqlx::query("DELETE FROM events WHERE at < $1")
                    .bind($crate::rows::ts(before))
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected())
            }

            async fn trim_jobs(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                batch: u32,
            ) -> $crate::Result<u64> {
                // Attempts go by ON DELETE CASCADE. A failed job waits for a person (retry or
                // resolve), however old; the latest job of a service and action stays.
                trim_rows!(
                    self.writer(),
                    "jobs",
                    "state NOT IN ('pending', 'running', 'failed') \
                     AND COALESCE(finished_at, updated_at) < $1 \
                     AND EXISTS (SELECT 1 FROM jobs k WHERE k.service_id = jobs.service_id \
                     AND k.action = jobs.action AND k.id > jobs.id)",
                    before,
                    batch
                )
            }

            // ---- API keys ----

            async fn insert_api_key(&self, k: &$crate::NewApiKey) -> $crate::Result<$crate::ApiKey> {
                let (client_id, reseller_id) = match k.scope {
                    Some(provisio_core::access::Scope::Client(c)) => (Some(c.0), None),
                    Some(provisio_core::access::Scope::Reseller(r)) => (None, Some(r.0)),
                    None => (None, None),
                };
                let row: $crate::rows::ApiKeyRow = sqlx::query_as(
                    "INSERT INTO api_keys (name, prefix, hash, created_at, role, client_id, reseller_id, \
                     actions, reveal_secrets, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
                )
                .bind(&k.name)
                .bind(&k.prefix)
                .bind(&k.hash)
                .bind($crate::rows::ts(self.clock.now()))
                .bind(k.role.as_str())
                .bind(client_id)
                .bind(reseller_id)
                .bind(k.actions.as_ref().map(sqlx::types::Json))
                .bind(k.reveal_secrets)
                .bind(k.expires_at.map($crate::rows::ts))
                .fetch_one(self.writer())
                .await?;
                row.try_into()
            }

            async fn catalog_generation(&self) -> $crate::Result<i64> {
                Ok(sqlx::query_scalar("SELECT n FROM catalog_generation WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn find_api_key(&self, hash: &str) -> $crate::Result<Option<$crate::ApiKey>> {
                one_by!(&self.pool, $crate::rows::ApiKeyRow, "SELECT * FROM api_keys WHERE hash = $1", hash)
            }

            async fn get_api_key(&self, id: i64) -> $crate::Result<Option<$crate::ApiKey>> {
                one_by!(&self.pool, $crate::rows::ApiKeyRow, "SELECT * FROM api_keys WHERE id = $1", id)
            }

            async fn touch_api_key(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                    .bind($crate::rows::ts(at))
                    .bind(id)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn list_api_keys(&self) -> $crate::Result<Vec<$crate::ApiKey>> {
                let rows: Vec<$crate::rows::ApiKeyRow> =
                    sqlx::query_as("SELECT * FROM api_keys ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn revoke_api_key(
                &self,
                id: i64,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<$crate::ApiKey>> {
                // The first revocation's time stands; revoking again changes nothing.
                let row: Option<$crate::rows::ApiKeyRow> = sqlx::query_as(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 RETURNING *",
                )
                .bind($crate::rows::ts(at))
                .bind(id)
                .fetch_optional(self.writer())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            // ---- resellers ----

            async fn insert_reseller(
                &self,
                name: &provisio_core::text::DisplayName,
                status: provisio_core::access::ResellerStatus,
            ) -> $crate::Result<provisio_core::access::Reseller> {
                let row: $crate::rows::ResellerRow = sqlx::query_as(
                    "INSERT INTO resellers (name, status, created_at) VALUES ($1, $2, $3) RETURNING *",
                )
                .bind(name.as_str())
                .bind(status.as_str())
                .bind($crate::rows::ts(self.clock.now()))
                .fetch_one(self.writer())
                .await?;
                row.try_into()
            }

            async fn get_reseller(
                &self,
                id: provisio_core::ResellerId,
            ) -> $crate::Result<Option<provisio_core::access::Reseller>> {
                one_by!(&self.pool, $crate::rows::ResellerRow, "SELECT * FROM resellers WHERE id = $1", id.0)
            }

            async fn update_reseller(
                &self,
                r: &provisio_core::access::Reseller,
            ) -> $crate::Result<provisio_core::access::Reseller> {
                let row: Option<$crate::rows::ResellerRow> = sqlx::query_as(
                    "UPDATE resellers SET name = $1, status = $2 WHERE id = $3 RETURNING *",
                )
                .bind(r.name.as_str())
                .bind(r.status.as_str())
                .bind(r.id.0)
                .fetch_optional(self.writer())
                .await?;
                row.ok_or($crate::StoreError::NotFound)?.try_into()
            }

            async fn list_resellers(
                &self,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::access::Reseller>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM resellers WHERE 1 = 1");
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows::ResellerRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |r: &provisio_core::access::Reseller| r.id.0)
            }
        }

        /// Puts `owner`'s running jobs among `ids` back to pending, lease cleared: those a
        /// stopping worker cancelled (marked for a lookup first), or with `standby_only` the
        /// standby jobs it never began (as they were: no call was made).
        async fn hand_back(
            writer: &DbPool,
            owner: &str,
            ids: &[provisio_core::job::JobId],
            now: chrono::DateTime<chrono::Utc>,
            standby_only: bool,
        ) -> $crate::Result<u64> {
            let (set, only) = if standby_only {
                ("standby = FALSE", " WHERE standby AND state = 'running' AND lease_owner = ")
            } else {
                ("needs_lookup = TRUE", " WHERE state = 'running' AND lease_owner = ")
            };
            let mut total = 0;
            for chunk in ids.chunks(500) {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "UPDATE jobs SET state = 'pending', {set}, lease_owner = NULL, lease_until = NULL, updated_at = "
                ));
                qb.push_bind($crate::rows::ts(now)).push(only).push_bind(owner);
                $crate::push_ids(&mut qb, chunk);
                total += qb.build().execute(writer).await?.rows_affected();
            }
            Ok(total)
        }

        /// Claims due jobs within each server's free slots, in a transaction that holds the
        /// claim lock (see `begin_claim`).
        async fn claim_tx(
            tx: &mut sqlx::Transaction<'_, $db>,
            req: &$crate::ClaimRequest<'_>,
            lock_clause: &str,
        ) -> $crate::Result<$crate::Claimed> {
        let now = $crate::rows::ts(req.now);
        // Each worker seen within a lease's length (`queue_presence`: at start, then every
        // third of a lease) gets an equal share of every server's slots, so a node that
        // refills its freed slots at once cannot keep another out.
        let window = (req.lease_until - req.now).num_microseconds().unwrap_or(0).max(0);
        // The claimer's standby jobs not yet begun, which take no place: promoted first into
        // the places found free (they are older than anything still pending).
        let mut hq = sqlx::QueryBuilder::<$db>::new(
            "SELECT server_id, id FROM jobs WHERE standby AND state = 'running' AND lease_owner = ",
        );
        hq.push_bind(req.owner);
        if !req.started.is_empty() {
            hq.push(" AND id NOT IN (");
            let mut sep = hq.separated(", ");
            for id in req.started {
                sep.push_bind(id.0);
            }
            hq.push(")");
        }
        hq.push(" ORDER BY server_id, id");
        let held: Vec<(i64, i64)> = hq.build_query_as().fetch_all(&mut **tx).await?;
        let mut held_by: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        for (server, id) in held {
            held_by.entry(server).or_default().push(id);
        }
        let mut cq = sqlx::QueryBuilder::<$db>::new(
            "SELECT s.id, s.max_concurrent, \
               (SELECT COUNT(*) FROM jobs r WHERE r.server_id = s.id AND r.state = 'running' \
                AND NOT r.standby) AS running, \
               (SELECT COUNT(*) FROM jobs o WHERE o.server_id = s.id AND o.state = 'running' \
                AND NOT o.standby AND o.lease_owner = ",
        );
        cq.push_bind(req.owner)
            .push(") AS own, (SELECT COUNT(*) FROM queue_workers w WHERE w.seen_at >= ")
            .push_bind(now - window)
            .push(") AS live, ");
        if req.finishing.is_empty() {
            cq.push("CAST(0 AS BIGINT) AS finishing");
        } else {
            // Only jobs still running under this claimer's lease: one taken over by another
            // worker may be running again. A standby job only finishes once begun, in a
            // place it was handed: that place is free again.
            cq.push(
                "(SELECT COUNT(*) FROM jobs f WHERE f.server_id = s.id AND f.state = 'running' \
                 AND f.lease_owner = ",
            )
            .push_bind(req.owner)
            .push(" AND f.id IN (");
            let mut sep = cq.separated(", ");
            for id in req.finishing {
                sep.push_bind(id.0);
            }
            cq.push(")) AS finishing");
        }
        cq.push(
            " FROM servers s WHERE EXISTS (SELECT 1 FROM jobs p WHERE p.server_id = s.id \
               AND p.state = 'pending' AND p.run_after <= ",
        )
        .push_bind(now)
        .push(")");
        if !held_by.is_empty() {
            cq.push(" OR s.id IN (");
            let mut sep = cq.separated(", ");
            for id in held_by.keys() {
                sep.push_bind(*id);
            }
            cq.push(")");
        }
        cq.push(" ORDER BY s.id");
        let caps: Vec<$crate::rows::CapacityRow> = cq.build_query_as().fetch_all(&mut **tx).await?;
        let mut budget = req.max_total as i64;
        let mut promoted: Vec<i64> = Vec::new();
        // Per server: how many pending jobs to take, and how many of those go on standby.
        let mut wanted: Vec<(i64, i64, i64)> = Vec::new();
        for c in caps {
            let cap = req
                .allowance
                .get(&provisio_core::ServerId(c.id))
                .map(|a| i64::from(*a));
            let held = held_by.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
            // The claimer's own running jobs whose remote call is over hold no slot.
            let live = c.live.max(1);
            let share = (c.max_concurrent + live - 1) / live;
            let free = (c.max_concurrent - c.running + c.finishing)
                .min(share - c.own + c.finishing)
                .min(cap.unwrap_or(i64::MAX))
                .min(budget)
                .max(0);
            budget -= free;
            let promote = free.min(held.len() as i64);
            promoted.extend(&held[..promote as usize]);
            let fresh = free - promote;
            // Held ahead only where nothing but `max_concurrent` limits the server: a rate
            // or an open breaker decides each start on its own.
            let ahead = if cap.is_none() {
                let wanted = req
                    .standby
                    .get(&provisio_core::ServerId(c.id))
                    .map_or(0, |n| i64::from(*n));
                (wanted.min(share) - (held.len() as i64 - promote)).max(0)
            } else {
                0
            };
            if fresh + ahead > 0 {
                wanted.push((c.id, fresh, ahead));
            }
        }
        let mut run_ids: Vec<i64> = promoted;
        let mut standby_ids: Vec<i64> = Vec::new();
        if !wanted.is_empty() {
            let mut pq = sqlx::QueryBuilder::<$db>::new("");
            for (i, (server, fresh, ahead)) in wanted.iter().enumerate() {
                if i > 0 {
                    pq.push(" UNION ALL ");
                }
                pq.push("SELECT * FROM (SELECT j.server_id, j.id FROM jobs j WHERE j.server_id = ")
                    .push_bind(*server)
                    .push(" AND j.state = 'pending' AND j.run_after <= ")
                    .push_bind(now)
                    .push(
                        " AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.service_id = j.service_id \
                         AND e.id < j.id AND e.state IN ('pending', 'running')) ORDER BY j.id LIMIT ",
                    )
                    .push_bind(fresh + ahead)
                    .push(lock_clause)
                    .push(") AS c");
            }
            let picked: Vec<(i64, i64)> = pq.build_query_as().fetch_all(&mut **tx).await?;
            let mut taken: std::collections::HashMap<i64, i64> = Default::default();
            for (server, id) in picked {
                let n = taken.entry(server).or_default();
                *n += 1;
                let fresh = wanted.iter().find(|w| w.0 == server).map_or(0, |w| w.1);
                if *n > fresh {
                    standby_ids.push(id);
                } else {
                    run_ids.push(id);
                }
            }
        }
        let mut out = $crate::Claimed::default();
        for (ids, standby) in [(run_ids, false), (standby_ids, true)] {
            if ids.is_empty() {
                continue;
            }
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "UPDATE jobs SET state = 'running', lease_owner = ",
            );
            qb.push_bind(req.owner)
                .push(", lease_until = ")
                .push_bind($crate::rows::ts(req.lease_until))
                .push(", updated_at = ")
                .push_bind(now)
                .push(", standby = ")
                .push_bind(standby)
                .push(" WHERE id IN (");
            let mut sep = qb.separated(", ");
            for id in &ids {
                sep.push_bind(*id);
            }
            qb.push(") RETURNING *");
            let rows: Vec<$crate::rows::JobRow> = qb.build_query_as().fetch_all(&mut **tx).await?;
            let mut jobs = rows
                .into_iter()
                .map(TryInto::try_into)
                .collect::<$crate::Result<Vec<provisio_core::job::Job>>>()?;
            jobs.sort_by_key(|j| j.id);
            if standby {
                out.standby = jobs;
            } else {
                out.run = jobs;
            }
        }
        Ok(out)
    }

        /// Writes job outcomes with their attempts, service changes and events; says per
        /// update whether this owner still held the job.
        async fn finish_tx(
            tx: &mut sqlx::Transaction<'_, $db>,
            at: chrono::DateTime<chrono::Utc>,
            updates: &[$crate::JobUpdate],
            row_lock: &str,
        ) -> $crate::Result<Vec<bool>> {
        let now = $crate::rows::ts(at);
        // One statement per chunk rather than per job: a round trip to the database
        // costs more than the row, and the writer is shared with every claim.
        let mut held_ids = std::collections::HashSet::new();
        for chunk in updates.chunks(200) {
            held_ids.extend(<$store>::write_job_outcomes(tx, now, chunk).await?);
        }
        // A job not updated was taken over by another worker after our lease ran
        // out; it will look the account up and finish the job itself.
        let applied: Vec<bool> =
            updates.iter().map(|u| held_ids.contains(&u.job_id.0)).collect();
        // Standby jobs begun in these jobs' places take them now, in the same transaction,
        // so a server's count of places taken stays the same; whether or not the finished
        // job's lease held, the standby job is running under this owner's.
        let mut handed: std::collections::BTreeMap<&str, Vec<provisio_core::job::JobId>> =
            Default::default();
        for u in updates {
            if let Some(to) = u.handed_to {
                handed.entry(u.owner.as_str()).or_default().push(to);
            }
        }
        for (owner, ids) in &handed {
            for chunk in ids.chunks(500) {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE jobs SET standby = FALSE WHERE standby AND state = 'running' AND lease_owner = ",
                );
                qb.push_bind(*owner);
                $crate::push_ids(&mut qb, chunk);
                qb.build().execute(&mut **tx).await?;
            }
        }
        let held: Vec<&$crate::JobUpdate> = updates
            .iter()
            .zip(&applied)
            .filter(|(_, h)| **h)
            .map(|(u, _)| u)
            .collect();
        for chunk in held.chunks(200) {
            <$store>::insert_attempts(tx, chunk).await?;
        }
        // Service changes of the same shape (the same columns set) go in one statement each.
        let mut shapes: std::collections::BTreeMap<[bool; 6], Vec<(&$crate::JobUpdate, &$crate::ServiceChange)>> =
            std::collections::BTreeMap::new();
        for u in &held {
            if let Some(c) = &u.service {
                let shape = [
                    c.status.is_some(),
                    c.suspension.is_some(),
                    c.outputs.is_some(),
                    c.password.is_some(),
                    c.product_id.is_some(),
                    c.server_id.is_some(),
                ];
                shapes.entry(shape).or_default().push((u, c));
            }
        }
        if !row_lock.is_empty() {
            // The servers whose counts these changes may move, locked in one order
            // (see `lock_loads`): each service's server now, and the one it moves to.
            let mut servers = std::collections::BTreeSet::new();
            let moved: Vec<i64> = held
                .iter()
                .filter_map(|u| u.service.as_ref().map(|c| (u, c)))
                .filter(|(_, c)| c.status.is_some() || c.server_id.is_some())
                .map(|(u, c)| {
                    if let Some(s) = c.server_id {
                        servers.insert(s.0);
                    }
                    u.service_id.0
                })
                .collect();
            if !moved.is_empty() {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT DISTINCT server_id FROM services WHERE id IN (");
                let mut sep = qb.separated(", ");
                for id in &moved {
                    sep.push_bind(*id);
                }
                qb.push(")");
                let now_on: Vec<i64> = qb.build_query_scalar().fetch_all(&mut **tx).await?;
                servers.extend(now_on);
                lock_loads(tx, &servers, row_lock).await?;
            }
        }
        for (shape, changes) in &shapes {
            for chunk in changes.chunks(200) {
                update_services(tx, *shape, chunk, now).await?;
            }
        }
        let mut events = Vec::new();
        for u in &held {
            if let Some(c) = &u.service {
                if let Some(j) = &c.follow_up {
                    insert_job(tx, at, u.service_id, j).await?;
                }
                if let Some(fields) = c.client_fields.as_ref().filter(|f| !f.is_empty()) {
                    // Its own event goes in now, before the job's outcome event below.
                    set_client_fields(tx, at, u.service_id, fields, row_lock).await?;
                }
            }
            events.extend(u.events.iter().cloned());
        }
        insert_events_tx(tx, at, &events).await?;
        Ok(applied)
    }

        /// Applies service changes that all set the same columns (`shape`, in the order of
        /// the fields of [`crate::ServiceChange`]) in one statement.
        async fn update_services(
            tx: &mut sqlx::Transaction<'_, $db>,
            shape: [bool; 6],
            changes: &[(&$crate::JobUpdate, &$crate::ServiceChange)],
            now: i64,
        ) -> $crate::Result<()> {
            let [status, suspension, outputs, password, product, server] = shape;
            // VALUES columns are named column1, column2, … on both databases.
            let mut sets = Vec::new();
            let mut n = 1;
            let mut col = |name: &str, sets: &mut Vec<String>| {
                n += 1;
                sets.push(format!("{name} = v.column{n}"));
            };
            if status {
                col("status", &mut sets);
            }
            if suspension {
                col("suspend_reason", &mut sets);
                col("suspended_at", &mut sets);
                col("suspended_until", &mut sets);
            }
            if outputs {
                col("outputs", &mut sets);
            }
            if password {
                col("password", &mut sets);
            }
            if product {
                col("product_id", &mut sets);
            }
            if server {
                col("server_id", &mut sets);
            }
            let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE services SET updated_at = ");
            qb.push_bind(now);
            for set in &sets {
                qb.push(", ").push(set);
            }
            qb.push(" FROM (VALUES ");
            for (i, (u, c)) in changes.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                // Typed binds name each column's type for PostgreSQL; the casts make the
                // first (id) column's type explicit for both.
                qb.push("(CAST(").push_bind(u.service_id.0).push(" AS BIGINT)");
                if let Some(st) = c.status {
                    qb.push(", ").push_bind(st.as_str());
                }
                if let Some(susp) = &c.suspension {
                    qb.push(", ")
                        .push_bind(susp.as_ref().map(|x| x.reason.as_str().to_string()))
                        .push(", ")
                        .push_bind(susp.as_ref().map(|x| $crate::rows::ts(x.since)))
                        .push(", ")
                        .push_bind(susp.as_ref().and_then(|x| x.until).map($crate::rows::ts));
                }
                if let Some(o) = &c.outputs {
                    qb.push(", ").push_bind(sqlx::types::Json(o.clone()));
                }
                if let Some(p) = &c.password {
                    qb.push(", ").push_bind(p.0.clone());
                }
                if let Some(p) = c.product_id {
                    qb.push(", ").push_bind(p.0);
                }
                if let Some(s) = c.server_id {
                    qb.push(", ").push_bind(s.0);
                }
                qb.push(")");
            }
            qb.push(") AS v WHERE services.id = v.column1");
            qb.build().execute(&mut **tx).await?;
            Ok(())
        }

        async fn insert_job(
            tx: &mut sqlx::Transaction<'_, $db>,
            now: chrono::DateTime<chrono::Utc>,
            service_id: provisio_core::ServiceId,
            j: &provisio_core::job::NewJob,
        ) -> $crate::Result<provisio_core::job::Job> {
            let now = $crate::rows::ts(now);
            let row: $crate::rows::JobRow = sqlx::query_as(
                "INSERT INTO jobs (service_id, server_id, action, state, params, idempotency_key, \
                 max_attempts, run_after, created_at, updated_at, actor, depth, trace_id) \
                 VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *",
            )
            .bind(service_id.0)
            .bind(j.server_id.0)
            .bind(j.action.as_str())
            .bind(sqlx::types::Json(&j.params))
            .bind(&j.idempotency_key)
            .bind(i64::from(j.max_attempts))
            .bind($crate::rows::ts(j.run_after))
            .bind(now)
            .bind(now)
            .bind($crate::actor::stored())
            .bind(i64::from($crate::actor::current_depth()))
            .bind(j.trace_id.to_string())
            .fetch_one(&mut **tx)
            .await?;
            row.try_into()
        }

        async fn insert_events_tx(
            conn: &mut <$db as sqlx::Database>::Connection,
            now: chrono::DateTime<chrono::Utc>,
            events: &[provisio_core::event::NewEvent],
        ) -> $crate::Result<()> {
            let now = $crate::rows::ts(now);
            // Rows are inserted in the events' order, so ids keep it.
            for chunk in events.chunks(200) {
                <$store>::insert_event_rows(conn, now, chunk).await?;
            }
            Ok(())
        }

        /// Merges `fields` into the custom fields of the service's client and announces the
        /// change, unless it changes nothing.
        async fn set_client_fields(
            tx: &mut sqlx::Transaction<'_, $db>,
            now: chrono::DateTime<chrono::Utc>,
            service: provisio_core::ServiceId,
            fields: &std::collections::BTreeMap<String, String>,
            row_lock: &str,
        ) -> $crate::Result<()> {
            let sql = format!(
                "SELECT * FROM clients WHERE id = (SELECT client_id FROM services WHERE id = $1){row_lock}"
            );
            let row: Option<$crate::rows::ClientRow> = sqlx::query_as(&sql)
                .bind(service.0)
                .fetch_optional(&mut **tx)
                .await?;
            let Some(row) = row else { return Ok(()) };
            let client: provisio_core::client::Client = row.try_into()?;
            let mut merged = client.custom_fields.clone();
            for (k, v) in fields {
                merged.insert(k.clone(), v.clone());
            }
            if merged == client.custom_fields {
                return Ok(());
            }
            let row: $crate::rows::ClientRow = sqlx::query_as(
                "UPDATE clients SET custom_fields = $1, updated_at = $2 WHERE id = $3 RETURNING *",
            )
            .bind(sqlx::types::Json(&merged))
            .bind($crate::rows::ts(now))
            .bind(client.id.0)
            .fetch_one(&mut **tx)
            .await?;
            let client: provisio_core::client::Client = row.try_into()?;
            announce_client(tx, now, &client, &["client.custom_fields_updated"]).await
        }

        async fn find_transaction(
            tx: &mut sqlx::Transaction<'_, $db>,
            client: provisio_core::ClientId,
            key: &str,
        ) -> $crate::Result<Option<provisio_core::client::Transaction>> {
            let row: Option<$crate::rows::TransactionRow> = sqlx::query_as(
                "SELECT * FROM client_transactions WHERE client_id = $1 AND idempotency_key = $2",
            )
            .bind(client.0)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
            row.map(TryInto::try_into).transpose()
        }

        /// The client, or [`crate::StoreError::NotFound`].
        async fn get_client_tx(
            tx: &mut sqlx::Transaction<'_, $db>,
            id: provisio_core::ClientId,
        ) -> $crate::Result<provisio_core::client::Client> {
            let row: Option<$crate::rows::ClientRow> =
                sqlx::query_as("SELECT * FROM clients WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&mut **tx)
                    .await?;
            row.ok_or($crate::StoreError::NotFound)?.try_into()
        }

        /// Locks the load rows of `servers` in id order (PostgreSQL; `row_lock` is empty on
        /// SQLite, whose one writer needs no row locks), before a transaction that changes
        /// services on several of them: the triggers keeping `server_loads` would otherwise
        /// lock them in whatever order the services come, and two such transactions could
        /// each wait for the other. Every shard of each server's count (migration 0022) is
        /// locked, so two such transactions meet on their first shared row, whichever rows
        /// their triggers then change.
        async fn lock_loads(
            tx: &mut sqlx::Transaction<'_, $db>,
            servers: &std::collections::BTreeSet<i64>,
            row_lock: &str,
        ) -> $crate::Result<()> {
            if row_lock.is_empty() || servers.len() < 2 {
                return Ok(());
            }
            let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT server_id FROM server_loads WHERE server_id IN (");
            let mut sep = qb.separated(", ");
            for s in servers {
                sep.push_bind(*s);
            }
            qb.push(") ORDER BY server_id, shard").push(row_lock);
            let _: Vec<i64> = qb.build_query_scalar().fetch_all(&mut **tx).await?;
            Ok(())
        }

        /// Orders with the events `announce` makes from their stored rows, in the open
        /// transaction `tx`: every write of orders (one caller's, or on SQLite the lane's
        /// for several callers) goes through here.
        async fn orders_tx(
            tx: &mut sqlx::Transaction<'_, $db>,
            now: chrono::DateTime<chrono::Utc>,
            orders: &[(provisio_core::service::NewService, Option<provisio_core::job::NewJob>)],
            announce: $crate::Announce,
            row_lock: &str,
        ) -> $crate::Result<Vec<(provisio_core::service::Service, Option<provisio_core::job::Job>)>> {
            let servers: std::collections::BTreeSet<i64> =
                orders.iter().map(|(s, _)| s.server_id.0).collect();
            lock_loads(tx, &servers, row_lock).await?;
            let out = insert_orders_tx(tx, now, orders).await?;
            let events: Vec<_> = out
                .iter()
                .flat_map(|(service, job)| announce(service, job.as_ref()))
                .collect();
            insert_events_tx(tx, now, &events).await?;
            Ok(out)
        }

        /// Orders in a few multi-row statements: every statement on SQLite's one writer is
        /// a round trip to its thread, and a group commit may carry dozens of orders. Rows
        /// of one VALUES list are inserted in order, so ascending ids give the input's order.
        async fn insert_orders_tx(
            conn: &mut <$db as sqlx::Database>::Connection,
            at: chrono::DateTime<chrono::Utc>,
            orders: &[(provisio_core::service::NewService, Option<provisio_core::job::NewJob>)],
        ) -> $crate::Result<Vec<(provisio_core::service::Service, Option<provisio_core::job::Job>)>> {
            let now = $crate::rows::ts(at);
            let mut out = Vec::with_capacity(orders.len());
            for chunk in orders.chunks($crate::sql::ORDERS_PER_STATEMENT) {
                let mut qb = sqlx::QueryBuilder::<$db>::new("");
                push_services_insert(&mut qb, now, chunk);
                let rows: Vec<$crate::rows::ServiceRow> =
                    qb.build_query_as().fetch_all(&mut *conn).await?;
                let services = $crate::sql::stored_services(chunk.len(), rows)?;
                let with_jobs: Vec<($crate::sql::JobService<'_>, &provisio_core::job::NewJob)> = services
                    .iter()
                    .zip(chunk)
                    .filter_map(|(s, (_, j))| j.as_ref().map(|j| ($crate::sql::JobService::Id(s.id.0), j)))
                    .collect();
                let mut jobs = Vec::new();
                if !with_jobs.is_empty() {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("");
                    push_jobs_insert(&mut qb, now, &with_jobs);
                    jobs = qb.build_query_as().fetch_all(&mut *conn).await?;
                }
                out.extend($crate::sql::pair_orders(services, with_jobs.len(), jobs)?);
            }
            Ok(out)
        }

        /// `INSERT INTO services … RETURNING *` for `chunk`, pushed onto `qb`.
        fn push_services_insert<'a>(
            qb: &mut sqlx::QueryBuilder<'a, $db>,
            now: i64,
            chunk: &'a [(provisio_core::service::NewService, Option<provisio_core::job::NewJob>)],
        ) {
            qb.push(
                "INSERT INTO services (client_id, product_id, server_id, username, password, status, \
                 invoice, parent_invoice, settings, outputs, created_at, updated_at, order_key, external_id) ",
            );
            qb.push_values(chunk, |mut b, (s, _)| {
                b.push_bind(s.client_id.0)
                    .push_bind(s.product_id.0)
                    .push_bind(s.server_id.0)
                    .push_bind(s.username.as_str())
                    .push_bind(&s.password.0)
                    .push_bind(s.status.as_str())
                    .push_bind(s.invoice.as_ref().map(|v| v.as_str()))
                    .push_bind(s.parent_invoice.as_ref().map(|v| v.as_str()))
                    .push_bind(sqlx::types::Json(&s.settings))
                    .push_bind(sqlx::types::Json(provisio_core::settings::Settings::new()))
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(s.order_key.as_deref())
                    .push_bind(s.external_id.as_ref().map(|v| v.as_str()));
            });
            qb.push(" RETURNING *");
        }

        /// `INSERT INTO jobs … RETURNING *` for `jobs` (not empty), pushed onto `qb`, stamped
        /// with the current actor and depth.
        fn push_jobs_insert<'a>(
            qb: &mut sqlx::QueryBuilder<'a, $db>,
            now: i64,
            jobs: &[($crate::sql::JobService<'a>, &'a provisio_core::job::NewJob)],
        ) {
            let actor = $crate::actor::stored();
            let depth = i64::from($crate::actor::current_depth());
            qb.push(
                "INSERT INTO jobs (service_id, server_id, action, state, params, idempotency_key, \
                 max_attempts, run_after, created_at, updated_at, actor, depth, trace_id) ",
            );
            qb.push_values(jobs, |mut b, (service, j)| {
                match service {
                    $crate::sql::JobService::Id(id) => {
                        b.push_bind(*id);
                    }
                    $crate::sql::JobService::Live(server, username) => {
                        b.push("(SELECT id FROM services WHERE server_id = ")
                            .push_bind_unseparated(*server)
                            .push_unseparated(" AND username = ")
                            .push_bind_unseparated(*username)
                            .push_unseparated(" AND status <> 'terminated')");
                    }
                }
                b.push_bind(j.server_id.0)
                    .push_bind(j.action.as_str())
                    .push_bind("pending")
                    .push_bind(sqlx::types::Json(&j.params))
                    .push_bind(&j.idempotency_key)
                    .push_bind(i64::from(j.max_attempts))
                    .push_bind($crate::rows::ts(j.run_after))
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(actor.clone())
                    .push_bind(depth)
                    .push_bind(j.trace_id.to_string());
            });
            qb.push(" RETURNING *");
        }

        async fn insert_client_tx(
            tx: &mut sqlx::Transaction<'_, $db>,
            at: chrono::DateTime<chrono::Utc>,
            c: &provisio_core::client::NewClient,
            announce: &[&str],
        ) -> $crate::Result<provisio_core::client::Client> {
            let now = $crate::rows::ts(at);
            let row: $crate::rows::ClientRow = sqlx::query_as(
                "INSERT INTO clients (name, email, status, balance_minor, currency, custom_fields, created_at, \
                 updated_at, reseller_id, external_id, order_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
            )
            .bind(c.name.as_str())
            .bind(c.email.as_str())
            .bind(c.status.as_str())
            .bind(c.balance_minor)
            .bind(c.currency.as_str())
            .bind(sqlx::types::Json(&c.custom_fields))
            .bind(now)
            .bind(now)
            .bind(c.reseller_id.map(|r| r.0))
            .bind(c.external_id.as_ref().map(|v| v.as_str()))
            .bind(c.order_key.as_deref())
            .fetch_one(&mut **tx)
            .await?;
            let client: provisio_core::client::Client = row.try_into()?;
            announce_client(tx, at, &client, announce).await?;
            Ok(client)
        }

        async fn announce_client(
            tx: &mut sqlx::Transaction<'_, $db>,
            now: chrono::DateTime<chrono::Utc>,
            client: &provisio_core::client::Client,
            kinds: &[&str],
        ) -> $crate::Result<()> {
            let payload = serde_json::json!({ "client": client });
            let events: Vec<provisio_core::event::NewEvent> = kinds
                .iter()
                .map(|k| provisio_core::event::NewEvent::new(k, format!("client:{}", client.id), payload.clone()))
                .collect();
            insert_events_tx(tx, now, &events).await
        }

        /// Announces a change of a server or product in its transaction, so the change and
        /// who made it are on record together.
        async fn announce_record(
            tx: &mut sqlx::Transaction<'_, $db>,
            now: chrono::DateTime<chrono::Utc>,
            kind: &str,
            (subject, payload): &(String, serde_json::Value),
        ) -> $crate::Result<()> {
            insert_events_tx(tx, now, &[provisio_core::event::NewEvent::new(kind, subject.clone(), payload.clone())]).await
        }

        fn page_clause(
            qb: &mut sqlx::QueryBuilder<'_, $db>,
            page: provisio_core::page::PageRequest,
        ) {
            if let Some(after) = page.after {
                qb.push(" AND id > ").push_bind(after);
            }
            qb.push(" ORDER BY id LIMIT ")
                .push_bind(i64::from(page.limit) + 1);
        }

        fn service_filter<'a>(qb: &mut sqlx::QueryBuilder<'a, $db>, f: &'a $crate::ServiceFilter) {
            if let Some(s) = f.status {
                qb.push(" AND status = ").push_bind(s.as_str());
            }
            if f.live_only {
                qb.push(" AND status <> 'terminated'");
            }
            if let Some(c) = f.client_id {
                qb.push(" AND client_id = ").push_bind(c.0);
            }
            if let Some(s) = f.server_id {
                qb.push(" AND server_id = ").push_bind(s.0);
            }
            if let Some(p) = f.product_id {
                qb.push(" AND product_id = ").push_bind(p.0);
            }
            if let Some(i) = &f.invoice {
                qb.push(" AND invoice = ").push_bind(i.as_str());
            }
            if let Some(i) = &f.parent_invoice {
                qb.push(" AND parent_invoice = ").push_bind(i.as_str());
            }
            if let Some(u) = &f.username {
                qb.push(" AND username = ").push_bind(u.as_str());
            }
            if let Some(e) = &f.external_id {
                qb.push(" AND external_id = ").push_bind(e.as_str());
            }
            if let Some(t) = f.suspended_before {
                qb.push(" AND status = 'suspended' AND suspended_at <= ").push_bind($crate::rows::ts(t));
            }
            if let Some(i) = &f.invoice_or_parent {
                qb.push(" AND (invoice = ").push_bind(i.as_str()).push(" OR parent_invoice = ").push_bind(i.as_str()).push(")");
            }
            if let Some(scope) = f.scope {
                scope_services(qb, scope);
            }
        }

        /// Narrows a query over `services` to the services a scoped key may see.
        fn scope_services(qb: &mut sqlx::QueryBuilder<'_, $db>, scope: provisio_core::access::Scope) {
            match scope {
                provisio_core::access::Scope::Client(c) => {
                    qb.push(" AND client_id = ").push_bind(c.0);
                }
                provisio_core::access::Scope::Reseller(r) => {
                    qb.push(" AND client_id IN (SELECT id FROM clients WHERE reseller_id = ")
                        .push_bind(r.0)
                        .push(")");
                }
            }
        }

        /// The rows of `table` with these ids, as records, in no particular order.
        async fn by_ids<R, T>(
            pool: &DbPool,
            table: &str,
            ids: &[i64],
        ) -> $crate::Result<Vec<T>>
        where
            R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            T: TryFrom<R, Error = $crate::StoreError>,
        {
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(500) {
                let rows: Vec<R> = <$store>::select_by_ids(pool, table, chunk).await?;
                for r in rows {
                    out.push(T::try_from(r)?);
                }
            }
            Ok(out)
        }

        fn collect_page<R, T>(
            rows: Vec<R>,
            page: provisio_core::page::PageRequest,
            id: impl Fn(&T) -> i64,
        ) -> $crate::Result<provisio_core::page::Page<T>>
        where
            T: TryFrom<R, Error = $crate::StoreError>,
        {
            let items = rows
                .into_iter()
                .map(T::try_from)
                .collect::<$crate::Result<Vec<T>>>()?;
            Ok(provisio_core::page::Page::from_overfetch(items, page.limit, id))
        }
    };
}

pub(crate) use impl_store;
