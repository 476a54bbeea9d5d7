//! The SQL of [`crate::UsageStore`], shared by both databases like `sql.rs`. Usage arrives
//! in pages of up to a few thousand readings, so each page is a handful of multi-row
//! statements in one transaction rather than statements per service.

/// Rows per multi-row statement: well below SQLite's 32,766 and PostgreSQL's 65,535
/// parameters at 9 columns.
pub(crate) const CHUNK: usize = 500;

/// Implements [`crate::UsageStore`] for a store type set up as `impl_store!` expects.
macro_rules! impl_usage_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::UsageStore for $store {
            async fn apply_usage(
                &self,
                readings: &[provisio_core::usage::NewReading],
            ) -> $crate::Result<Vec<$crate::UsageApplied>> {
                use std::collections::{BTreeMap, HashMap};
                use provisio_core::usage::UsageState;
                if readings.is_empty() {
                    return Ok(Vec::new());
                }
                let now = self.clock.now();
                let mut ids: Vec<i64> = readings.iter().map(|r| r.service_id.0).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;

                let mut current: HashMap<(i64, String), UsageState> = HashMap::new();
                let mut topups: HashMap<(i64, String), Vec<$crate::usage::TopupRow>> =
                    HashMap::new();
                for chunk in ids.chunks($crate::sql_usage::CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT * FROM service_usage WHERE service_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(")");
                    let rows: Vec<$crate::usage::UsageRow> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    for r in rows {
                        let s: UsageState = r.try_into()?;
                        current.insert((s.service_id.0, s.metric.clone()), s);
                    }
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT * FROM usage_topups WHERE service_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(") ORDER BY id");
                    let rows: Vec<$crate::usage::TopupRow> =
                        qb.build_query_as().fetch_all(&mut *tx).await?;
                    for r in rows {
                        topups.entry((r.service_id, r.metric.clone())).or_default().push(r);
                    }
                }

                let mut out = Vec::with_capacity(readings.len());
                let mut dirty: BTreeMap<(i64, String), UsageState> = BTreeMap::new();
                let mut history = Vec::new();
                let mut touched_topups: Vec<(i64, f64)> = Vec::new();
                let mut updated: BTreeMap<i64, serde_json::Map<String, serde_json::Value>> =
                    BTreeMap::new();
                let mut events = Vec::new();
                for r in readings {
                    let key = (r.service_id.0, r.metric.clone());
                    let list = topups.get_mut(&key);
                    let left: f64 = list
                        .as_ref()
                        .map(|l| l.iter().map(|t| (t.amount - t.consumed).max(0.0)).sum())
                        .unwrap_or(0.0);
                    let applied =
                        provisio_core::usage::apply(current.get(&key), left, r, now);
                    if applied.topup_delta != 0.0 {
                        if let Some(list) = list {
                            let pairs: Vec<(f64, f64)> =
                                list.iter().map(|t| (t.amount, t.consumed)).collect();
                            for (i, consumed) in
                                provisio_core::usage::spread(&pairs, applied.topup_delta)
                            {
                                list[i].consumed = consumed;
                                touched_topups.push((list[i].id, consumed));
                            }
                        }
                    }
                    let st = applied.state.clone();
                    if applied.changed || applied.exceeded_now || applied.topup_delta != 0.0 {
                        dirty.insert(key.clone(), st.clone());
                    }
                    if applied.changed {
                        history.push(st.clone());
                        updated.entry(st.service_id.0).or_default().insert(
                            st.metric.clone(),
                            serde_json::json!({
                                "used": st.used,
                                "limit": st.limit,
                                "unit": st.unit,
                                "topup_used": st.topup_used,
                                "period_start": st.period_start,
                            }),
                        );
                    }
                    if applied.exceeded_now {
                        events.push(provisio_core::event::NewEvent::new(
                            "service.usage_exceeded",
                            format!("service:{}", st.service_id),
                            serde_json::json!({
                                "service_id": st.service_id,
                                "metric": st.metric,
                                "used": st.used,
                                "limit": st.limit,
                                "unit": st.unit,
                                "topup_used": st.topup_used,
                                "period_start": st.period_start,
                            }),
                        ));
                    }
                    current.insert(key, st.clone());
                    out.push($crate::UsageApplied {
                        state: st,
                        changed: applied.changed,
                        exceeded_now: applied.exceeded_now,
                    });
                }
                for (sid, metrics) in updated {
                    events.push(provisio_core::event::NewEvent::new(
                        "service.usage_updated",
                        format!("service:{sid}"),
                        serde_json::json!({ "service_id": sid, "metrics": metrics }),
                    ));
                }

                let dirty: Vec<UsageState> = dirty.into_values().collect();
                for chunk in dirty.chunks($crate::sql_usage::CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO service_usage (service_id, metric, period_start, used, \
                         limit_value, unit, topup_used, exceeded_period, updated_at) ",
                    );
                    qb.push_values(chunk, |mut b, s| {
                        b.push_bind(s.service_id.0)
                            .push_bind(s.metric.clone())
                            .push_bind($crate::rows::ts(s.period_start))
                            .push_bind(s.used)
                            .push_bind(s.limit)
                            .push_bind(s.unit.clone())
                            .push_bind(s.topup_used)
                            .push_bind(s.exceeded_period.map($crate::rows::ts))
                            .push_bind($crate::rows::ts(s.updated_at));
                    });
                    qb.push(
                        " ON CONFLICT (service_id, metric) DO UPDATE SET \
                         period_start = excluded.period_start, used = excluded.used, \
                         limit_value = excluded.limit_value, unit = excluded.unit, \
                         topup_used = excluded.topup_used, \
                         exceeded_period = excluded.exceeded_period, \
                         updated_at = excluded.updated_at",
                    );
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in history.chunks($crate::sql_usage::CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO usage_readings (service_id, metric, period_start, used, \
                         limit_value, at) ",
                    );
                    qb.push_values(chunk, |mut b, s| {
                        b.push_bind(s.service_id.0)
                            .push_bind(s.metric.clone())
                            .push_bind($crate::rows::ts(s.period_start))
                            .push_bind(s.used)
                            .push_bind(s.limit)
                            .push_bind($crate::rows::ts(s.updated_at));
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                for (id, consumed) in touched_topups {
                    sqlx::query("UPDATE usage_topups SET consumed = $1 WHERE id = $2")
                        .bind(consumed)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                let at = $crate::rows::ts(now);
                let current = $crate::actor::stored();
                let depth = $crate::actor::current_depth();
                for chunk in events.chunks($crate::sql_usage::CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO events (type, at, subject, payload, actor, depth) ",
                    );
                    qb.push_values(chunk, |mut b, e| {
                        b.push_bind(e.kind.as_str().to_string())
                            .push_bind(at)
                            .push_bind(e.subject.clone())
                            .push_bind(sqlx::types::Json(e.payload.clone()))
                            .push_bind(e.actor.as_ref().map(|a| a.stored()).or_else(|| current.clone()))
                            .push_bind(i64::from(e.depth.unwrap_or(depth)));
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok(out)
            }

            async fn service_usage(
                &self,
                id: provisio_core::ServiceId,
            ) -> $crate::Result<Vec<provisio_core::usage::UsageState>> {
                let rows: Vec<$crate::usage::UsageRow> = sqlx::query_as(
                    "SELECT * FROM service_usage WHERE service_id = $1 ORDER BY metric",
                )
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn usage_of_services(
                &self,
                ids: &[provisio_core::ServiceId],
            ) -> $crate::Result<(
                Vec<provisio_core::usage::UsageState>,
                Vec<provisio_core::usage::Topup>,
            )> {
                let mut states = Vec::new();
                let mut topups = Vec::new();
                for chunk in ids.chunks($crate::sql_usage::CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT * FROM service_usage WHERE service_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.0);
                    }
                    qb.push(") ORDER BY service_id, metric");
                    let rows: Vec<$crate::usage::UsageRow> =
                        qb.build_query_as().fetch_all(&self.pool).await?;
                    for r in rows {
                        states.push(r.try_into()?);
                    }
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT * FROM usage_topups WHERE service_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.0);
                    }
                    qb.push(") ORDER BY id");
                    let rows: Vec<$crate::usage::TopupRow> =
                        qb.build_query_as().fetch_all(&self.pool).await?;
                    for r in rows {
                        topups.push(r.try_into()?);
                    }
                }
                Ok((states, topups))
            }

            async fn usage_readings(
                &self,
                id: provisio_core::ServiceId,
                metric: Option<&str>,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::usage::UsageReading>>
            {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT * FROM usage_readings WHERE service_id = ",
                );
                qb.push_bind(id.0);
                if let Some(m) = metric {
                    qb.push(" AND metric = ").push_bind(m);
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::usage::ReadingRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |r: &provisio_core::usage::UsageReading| r.id)
            }

            async fn purge_usage_readings(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let r = sqlx::query("DELETE FROM usage_readings WHERE at < $1")
                    .bind($crate::rows::ts(before))
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected())
            }

            async fn add_topup(
                &self,
                service: provisio_core::ServiceId,
                new: &provisio_core::usage::NewTopup,
            ) -> $crate::Result<(provisio_core::usage::Topup, bool)> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                if let Some(key) = &new.idempotency_key {
                    let found: Option<$crate::usage::TopupRow> = sqlx::query_as(
                        "SELECT * FROM usage_topups WHERE service_id = $1 AND idempotency_key = $2",
                    )
                    .bind(service.0)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = found {
                        return Ok((row.try_into()?, true));
                    }
                }
                let row: $crate::usage::TopupRow = sqlx::query_as(
                    "INSERT INTO usage_topups (service_id, metric, amount, consumed, note, \
                     idempotency_key, created_at) VALUES ($1, $2, $3, 0, $4, $5, $6) RETURNING *",
                )
                .bind(service.0)
                .bind(&new.metric)
                .bind(new.amount)
                .bind(&new.note)
                .bind(&new.idempotency_key)
                .bind($crate::rows::ts(self.clock.now()))
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok((row.try_into()?, false))
            }

            async fn list_topups(
                &self,
                service: provisio_core::ServiceId,
            ) -> $crate::Result<Vec<provisio_core::usage::Topup>> {
                let rows: Vec<$crate::usage::TopupRow> =
                    sqlx::query_as("SELECT * FROM usage_topups WHERE service_id = $1 ORDER BY id")
                        .bind(service.0)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_usage_policy(
                &self,
                product: provisio_core::ProductId,
                policy: &provisio_core::usage::UsagePolicy,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO usage_policies (product_id, policy, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (product_id) DO UPDATE SET policy = excluded.policy, \
                     updated_at = excluded.updated_at",
                )
                .bind(product.0)
                .bind(sqlx::types::Json(policy))
                .bind($crate::rows::ts(self.clock.now()))
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn delete_usage_policy(
                &self,
                product: provisio_core::ProductId,
            ) -> $crate::Result<bool> {
                let r = sqlx::query("DELETE FROM usage_policies WHERE product_id = $1")
                    .bind(product.0)
                    .execute(self.writer())
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn usage_policies(
                &self,
            ) -> $crate::Result<Vec<provisio_core::usage::StoredPolicy>> {
                let rows: Vec<$crate::usage::PolicyRow> =
                    sqlx::query_as("SELECT product_id, policy FROM usage_policies ORDER BY product_id")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn insert_sync_run(
                &self,
                slot: Option<&str>,
                report: &serde_json::Value,
            ) -> $crate::Result<Option<$crate::SyncRun>> {
                let r: std::result::Result<$crate::usage::SyncRow, sqlx::Error> = sqlx::query_as(
                    "INSERT INTO usage_syncs (slot, state, report, started_at) \
                     VALUES ($1, 'running', $2, $3) RETURNING *",
                )
                .bind(slot)
                .bind(sqlx::types::Json(report))
                .bind($crate::rows::ts(self.clock.now()))
                .fetch_one(self.writer())
                .await;
                match r.map_err($crate::StoreError::from) {
                    Ok(row) => Ok(Some(row.try_into()?)),
                    Err($crate::StoreError::Conflict { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }

            async fn update_sync_run(
                &self,
                id: i64,
                state: &str,
                report: &serde_json::Value,
                finished: bool,
            ) -> $crate::Result<()> {
                let at = finished.then(|| $crate::rows::ts(self.clock.now()));
                sqlx::query(
                    "UPDATE usage_syncs SET state = $1, report = $2, \
                     finished_at = COALESCE($3, finished_at) WHERE id = $4",
                )
                .bind(state)
                .bind(sqlx::types::Json(report))
                .bind(at)
                .bind(id)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn get_sync_run(&self, id: i64) -> $crate::Result<Option<$crate::SyncRun>> {
                one_by!(&self.pool, $crate::usage::SyncRow, "SELECT * FROM usage_syncs WHERE id = $1", id)
            }

            async fn list_sync_runs(
                &self,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<$crate::SyncRun>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM usage_syncs WHERE 1 = 1");
                page_clause(&mut qb, page);
                let rows: Vec<$crate::usage::SyncRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |r: &$crate::SyncRun| r.id)
            }

            async fn trim_sync_runs(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                batch: u32,
            ) -> $crate::Result<u64> {
                trim_rows!(self.writer(), "usage_syncs", "state <> 'running' AND finished_at IS NOT NULL AND finished_at < $1", before, batch)
            }

            async fn trim_audits(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                batch: u32,
            ) -> $crate::Result<u64> {
                trim_rows!(self.writer(), "audits", "state <> 'running' AND finished_at IS NOT NULL AND finished_at < $1", before, batch)
            }

            async fn insert_audit(
                &self,
                new: &$crate::NewAudit,
            ) -> $crate::Result<Option<provisio_core::audit::Audit>> {
                let sql = format!(
                    "INSERT INTO audits (server_id, slot, state, fix, dry_run, force, counts, \
                     findings, started_at) VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8) \
                     RETURNING {}",
                    $crate::usage::AUDIT_COLUMNS
                );
                let r: std::result::Result<$crate::usage::AuditRow, sqlx::Error> =
                    sqlx::query_as(&sql)
                        .bind(new.server_id.0)
                        .bind(new.slot.as_deref())
                        .bind(new.fix.map(|f| f.as_str()))
                        .bind(new.dry_run)
                        .bind(new.force)
                        .bind(sqlx::types::Json(serde_json::json!({})))
                        .bind(sqlx::types::Json(serde_json::json!([])))
                        .bind($crate::rows::ts(self.clock.now()))
                        .fetch_one(self.writer())
                        .await;
                match r.map_err($crate::StoreError::from) {
                    Ok(row) => Ok(Some(row.try_into()?)),
                    Err($crate::StoreError::Conflict { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }

            async fn finish_audit(
                &self,
                id: i64,
                fin: &$crate::AuditFinish,
                events: &[provisio_core::event::NewEvent],
            ) -> $crate::Result<provisio_core::audit::Audit> {
                let sql = format!(
                    "UPDATE audits SET state = $1, remote_accounts = $2, local_services = $3, \
                     counts = $4, note = $5, findings = $6, finished_at = $7 WHERE id = $8 \
                     RETURNING {}",
                    $crate::usage::AUDIT_COLUMNS
                );
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: $crate::usage::AuditRow = sqlx::query_as(&sql)
                    .bind(fin.state.as_str())
                    .bind(fin.remote_accounts)
                    .bind(fin.local_services)
                    .bind(sqlx::types::Json(&fin.counts))
                    .bind(&fin.note)
                    .bind(sqlx::types::Json(&fin.findings))
                    .bind($crate::rows::ts(self.clock.now()))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                insert_events_tx(&mut tx, self.clock.now(), events).await?;
                tx.commit().await?;
                wr.durable().await?;
                row.try_into()
            }

            async fn get_audit(
                &self,
                id: i64,
            ) -> $crate::Result<Option<provisio_core::audit::Audit>> {
                let sql = format!(
                    "SELECT {} FROM audits WHERE id = $1",
                    $crate::usage::AUDIT_COLUMNS
                );
                let row: Option<$crate::usage::AuditRow> = sqlx::query_as(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn audit_findings(
                &self,
                id: i64,
            ) -> $crate::Result<Option<Vec<provisio_core::audit::Finding>>> {
                let row: Option<(sqlx::types::Json<Vec<provisio_core::audit::Finding>>,)> =
                    sqlx::query_as("SELECT findings FROM audits WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|r| r.0 .0))
            }

            async fn list_audits(
                &self,
                server: Option<provisio_core::ServerId>,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::audit::Audit>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM audits WHERE 1 = 1",
                    $crate::usage::AUDIT_COLUMNS
                ));
                if let Some(s) = server {
                    qb.push(" AND server_id = ").push_bind(s.0);
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::usage::AuditRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |a: &provisio_core::audit::Audit| a.id)
            }

            async fn server_accounts(
                &self,
                server: provisio_core::ServerId,
            ) -> $crate::Result<Vec<$crate::AccountRow>> {
                let rows: Vec<$crate::usage::AccountRowRaw> = sqlx::query_as(
                    "SELECT id, username, status, product_id FROM services \
                     WHERE server_id = $1 AND status <> 'terminated' ORDER BY id",
                )
                .bind(server.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn audit_import(
                &self,
                s: &provisio_core::service::NewService,
                audit_id: i64,
            ) -> $crate::Result<provisio_core::service::Service> {
                let now = $crate::rows::ts(self.clock.now());
                let suspended = s.status == provisio_core::service::ServiceStatus::Suspended;
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: $crate::rows::ServiceRow = sqlx::query_as(
                    "INSERT INTO services (client_id, product_id, server_id, username, password, status, \
                     suspend_reason, suspended_at, invoice, parent_invoice, settings, outputs, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *",
                )
                .bind(s.client_id.0)
                .bind(s.product_id.0)
                .bind(s.server_id.0)
                .bind(s.username.as_str())
                .bind(&s.password.0)
                .bind(s.status.as_str())
                .bind(suspended.then_some("audit"))
                .bind(suspended.then_some(now))
                .bind(s.invoice.as_ref().map(|v| v.as_str()))
                .bind(s.parent_invoice.as_ref().map(|v| v.as_str()))
                .bind(sqlx::types::Json(&s.settings))
                .bind(sqlx::types::Json(provisio_core::settings::Settings::new()))
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let service: provisio_core::service::Service = row.try_into()?;
                let event = provisio_core::event::NewEvent::new(
                    "service.imported",
                    format!("service:{}", service.id),
                    serde_json::json!({
                        "service_id": service.id,
                        "username": service.username.as_str(),
                        "client_id": service.client_id,
                        "product_id": service.product_id,
                        "server_id": service.server_id,
                        "status": service.status.as_str(),
                        "audit_id": audit_id,
                    }),
                );
                insert_events_tx(&mut tx, self.clock.now(), std::slice::from_ref(&event)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(service)
            }

            async fn audit_correct(
                &self,
                id: provisio_core::ServiceId,
                expected: provisio_core::service::ServiceStatus,
                status: Option<provisio_core::service::ServiceStatus>,
                product: Option<provisio_core::ProductId>,
                audit_id: i64,
            ) -> $crate::Result<Option<provisio_core::service::Service>> {
                use provisio_core::service::ServiceStatus;
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let before: Option<$crate::rows::ServiceRow> = sqlx::query_as(&format!(
                    "SELECT * FROM services WHERE id = $1{}",
                    Self::ROW_LOCK
                ))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(before) = before else { return Ok(None) };
                let before: provisio_core::service::Service = before.try_into()?;
                if before.status != expected {
                    return Ok(None);
                }
                let new_status = status.unwrap_or(before.status);
                // A suspension is kept when the status stays suspended, set when it becomes
                // suspended, and cleared otherwise.
                let (reason, at, until) = match (new_status, &before.suspension) {
                    (ServiceStatus::Suspended, Some(s)) if before.status == ServiceStatus::Suspended => (
                        Some(s.reason.as_str().to_string()),
                        Some($crate::rows::ts(s.since)),
                        s.until.map($crate::rows::ts),
                    ),
                    (ServiceStatus::Suspended, _) => (Some("audit".to_string()), Some(now), None),
                    _ => (None, None, None),
                };
                let row: $crate::rows::ServiceRow = sqlx::query_as(
                    "UPDATE services SET status = $1, product_id = COALESCE($2, product_id), \
                     suspend_reason = $3, suspended_at = $4, suspended_until = $5, updated_at = $6 \
                     WHERE id = $7 RETURNING *",
                )
                .bind(new_status.as_str())
                .bind(product.map(|p| p.0))
                .bind(reason)
                .bind(at)
                .bind(until)
                .bind(now)
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await?;
                let after: provisio_core::service::Service = row.try_into()?;
                let event = provisio_core::event::NewEvent::new(
                    "service.status_corrected",
                    format!("service:{}", after.id),
                    serde_json::json!({
                        "service_id": after.id,
                        "from": {"status": before.status.as_str(), "product_id": before.product_id},
                        "to": {"status": after.status.as_str(), "product_id": after.product_id},
                        "audit_id": audit_id,
                    }),
                );
                insert_events_tx(&mut tx, self.clock.now(), std::slice::from_ref(&event)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(Some(after))
            }
        }
    };
}

pub(crate) use impl_usage_store;
