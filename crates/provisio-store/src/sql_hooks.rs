//! The SQL of [`crate::HookStore`], shared by both databases the same way `sql.rs` shares
//! the records' SQL.

/// Implements [`crate::HookStore`] for a store type set up as `impl_store!` expects.
macro_rules! impl_hook_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::HookStore for $store {
            // ---- handlers ----

            async fn insert_handler(
                &self,
                h: &provisio_core::handler::NewHandler,
            ) -> $crate::Result<provisio_core::handler::Handler> {
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: $crate::rows_hooks::HandlerRow = sqlx::query_as(
                    "INSERT INTO handlers (name, kind, target, status, phase, events, timeout_ms, ord, \
                     on_error, secret, email, disable_after_secs, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *",
                )
                .bind(h.name.as_str())
                .bind(h.kind.as_str())
                .bind(&h.target)
                .bind(h.status.as_str())
                .bind(h.phase.as_str())
                .bind(sqlx::types::Json(patterns(h)))
                .bind(h.timeout.as_millis() as i64)
                .bind(i64::from(h.order))
                .bind(h.on_error.as_str())
                .bind(h.secret.as_ref().map(|s| s.0.clone()))
                .bind(h.email.as_ref().map(sqlx::types::Json))
                .bind(h.disable_after.as_secs() as i64)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let handler: provisio_core::handler::Handler = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "handler.created", &$crate::rows::handler_record(&handler)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(handler)
            }

            async fn get_handler(
                &self,
                id: provisio_core::HandlerId,
            ) -> $crate::Result<Option<provisio_core::handler::Handler>> {
                one_by!(&self.pool, $crate::rows_hooks::HandlerRow, "SELECT * FROM handlers WHERE id = $1", id.0)
            }

            async fn get_handler_by_name(
                &self,
                name: &str,
            ) -> $crate::Result<Option<provisio_core::handler::Handler>> {
                one_by!(&self.pool, $crate::rows_hooks::HandlerRow, "SELECT * FROM handlers WHERE name = $1", name)
            }

            async fn update_handler(
                &self,
                id: provisio_core::HandlerId,
                h: &provisio_core::handler::NewHandler,
            ) -> $crate::Result<provisio_core::handler::Handler> {
                let enabled = h.status == provisio_core::handler::HandlerStatus::Enabled;
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows_hooks::HandlerRow> = sqlx::query_as(
                    "UPDATE handlers SET name = $1, kind = $2, target = $3, status = $4, phase = $5, \
                     events = $6, timeout_ms = $7, ord = $8, on_error = $9, \
                     secret = COALESCE($10, secret), email = $11, disable_after_secs = $12, \
                     failing_since = CASE WHEN $13 THEN NULL ELSE failing_since END, \
                     disabled_reason = CASE WHEN $13 THEN NULL ELSE disabled_reason END, \
                     updated_at = $14 WHERE id = $15 RETURNING *",
                )
                .bind(h.name.as_str())
                .bind(h.kind.as_str())
                .bind(&h.target)
                .bind(h.status.as_str())
                .bind(h.phase.as_str())
                .bind(sqlx::types::Json(patterns(h)))
                .bind(h.timeout.as_millis() as i64)
                .bind(i64::from(h.order))
                .bind(h.on_error.as_str())
                .bind(h.secret.as_ref().map(|s| s.0.clone()))
                .bind(h.email.as_ref().map(sqlx::types::Json))
                .bind(h.disable_after.as_secs() as i64)
                .bind(enabled)
                .bind($crate::rows::ts(self.clock.now()))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let handler: provisio_core::handler::Handler =
                    row.ok_or($crate::StoreError::NotFound)?.try_into()?;
                announce_record(&mut tx, self.clock.now(), "handler.updated", &$crate::rows::handler_record(&handler)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(handler)
            }

            async fn rotate_handler_secret(
                &self,
                id: provisio_core::HandlerId,
                secret: &provisio_core::secret::Sealed,
                keep_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<provisio_core::handler::Handler> {
                let row: Option<$crate::rows_hooks::HandlerRow> = sqlx::query_as(
                    "UPDATE handlers SET previous_secret = secret, previous_secret_until = $1, \
                     secret = $2, updated_at = $3 WHERE id = $4 RETURNING *",
                )
                .bind($crate::rows::ts(keep_until))
                .bind(secret.0.clone())
                .bind($crate::rows::ts(self.clock.now()))
                .bind(id.0)
                .fetch_optional(self.writer())
                .await?;
                row.ok_or($crate::StoreError::NotFound)?.try_into()
            }

            async fn delete_handler(&self, id: provisio_core::HandlerId) -> $crate::Result<bool> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows_hooks::HandlerRow> =
                    sqlx::query_as("DELETE FROM handlers WHERE id = $1 RETURNING *")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { return Ok(false) };
                let handler: provisio_core::handler::Handler = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "handler.deleted", &$crate::rows::handler_record(&handler)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(true)
            }

            async fn list_handlers(
                &self,
                f: &$crate::HandlerFilter,
            ) -> $crate::Result<Vec<provisio_core::handler::Handler>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM handlers WHERE 1 = 1");
                if let Some(p) = f.phase {
                    qb.push(" AND phase = ").push_bind(p.as_str());
                }
                if let Some(s) = f.status {
                    qb.push(" AND status = ").push_bind(s.as_str());
                }
                qb.push(" ORDER BY ord, name");
                let rows: Vec<$crate::rows_hooks::HandlerRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            // ---- handing events out ----

            async fn get_event(
                &self,
                id: provisio_core::event::EventId,
            ) -> $crate::Result<Option<provisio_core::event::Event>> {
                one_by!(&self.pool, $crate::rows::EventRow, "SELECT * FROM events WHERE id = $1", id.0)
            }

            async fn undispatched_events(
                &self,
                limit: u32,
            ) -> $crate::Result<Vec<provisio_core::event::Event>> {
                let rows: Vec<$crate::rows::EventRow> = sqlx::query_as(
                    "SELECT * FROM events WHERE dispatched = FALSE ORDER BY id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn dispatch(
                &self,
                events: &[provisio_core::event::EventId],
                deliveries: &[$crate::NewDelivery],
                runs: &[$crate::NewRuleRun],
            ) -> $crate::Result<()> {
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                for d in deliveries {
                    sqlx::query(
                        "INSERT INTO deliveries (handler_id, event_id, event_type, subject, state, \
                         attempts, next_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7) \
                         ON CONFLICT (handler_id, event_id) DO NOTHING",
                    )
                    .bind(d.handler_id.0)
                    .bind(d.event_id.0)
                    .bind(d.event_type.as_str())
                    .bind(&d.subject)
                    .bind($crate::rows::ts(d.next_at))
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                for r in runs {
                    sqlx::query(
                        "INSERT INTO rule_runs (rule_id, event_id, subject, due_at, state, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'pending', $5, $6) \
                         ON CONFLICT (rule_id, event_id) DO NOTHING",
                    )
                    .bind(r.rule_id.0)
                    .bind(r.event_id.0)
                    .bind(&r.subject)
                    .bind($crate::rows::ts(r.due_at))
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                for chunk in events.chunks(500) {
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new("UPDATE events SET dispatched = TRUE WHERE id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.0);
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok(())
            }

            // ---- deliveries ----

            async fn claim_deliveries(
                &self,
                owner: &str,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<provisio_core::handler::Delivery>> {
                let now = $crate::rows::ts(now);
                let mut conn = self.claim_conn().await?;
                let mut tx = Self::begin_claim(&mut conn).await?;
                let sql = format!(
                    "UPDATE deliveries SET state = 'running', lease_owner = $1, lease_until = $2, \
                     updated_at = $3 WHERE id IN (SELECT id FROM (SELECT d.id FROM deliveries d \
                     WHERE d.state = 'pending' AND d.next_at <= $4 \
                     AND d.handler_id IN (SELECT h.id FROM handlers h WHERE h.status = 'enabled') \
                     AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.handler_id = d.handler_id \
                     AND e.subject = d.subject AND e.id < d.id AND e.state IN ('pending', 'running')) \
                     ORDER BY d.id LIMIT $5{}) AS c) RETURNING *",
                    Self::LOCK_CLAUSE
                );
                let rows: Vec<$crate::rows_hooks::DeliveryRow> = sqlx::query_as(&sql)
                    .bind(owner)
                    .bind($crate::rows::ts(lease_until))
                    .bind(now)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                conn.ended_cleanly();
                let mut out = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<Vec<provisio_core::handler::Delivery>>>()?;
                out.sort_by_key(|d| d.id);
                Ok(out)
            }

            async fn finish_delivery(
                &self,
                u: &$crate::DeliveryUpdate,
            ) -> $crate::Result<$crate::HandlerHealth> {
                let now = self.clock.now();
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let handler: Option<(i64,)> = sqlx::query_as(
                    "UPDATE deliveries SET state = $1, attempts = $2, next_at = $3, last_error = $4, \
                     lease_owner = NULL, lease_until = NULL, updated_at = $5 \
                     WHERE id = $6 AND state = 'running' AND lease_owner = $7 RETURNING handler_id",
                )
                .bind(u.state.as_str())
                .bind(i64::from(u.attempts))
                .bind($crate::rows::ts(u.next_at))
                .bind(u.last_error.as_deref())
                .bind($crate::rows::ts(now))
                .bind(u.id.0)
                .bind(&u.owner)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((handler_id,)) = handler else {
                    return Ok($crate::HandlerHealth::LeaseLost);
                };
                let a = &u.attempt;
                sqlx::query(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, at, duration_ms, succeeded, \
                     status_code, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(u.id.0)
                .bind(i64::from(a.attempt))
                .bind($crate::rows::ts(a.at))
                .bind(a.duration_ms)
                .bind(a.succeeded)
                .bind(a.status_code.map(i64::from))
                .bind(a.detail.as_deref())
                .execute(&mut *tx)
                .await?;
                let mut health = $crate::HandlerHealth::Fine;
                if a.succeeded {
                    sqlx::query("UPDATE handlers SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                        .bind(handler_id)
                        .execute(&mut *tx)
                        .await?;
                } else {
                    let row: Option<$crate::rows_hooks::HandlerRow> = sqlx::query_as(
                        "UPDATE handlers SET failing_since = COALESCE(failing_since, $1) \
                         WHERE id = $2 RETURNING *",
                    )
                    .bind($crate::rows::ts(now))
                    .bind(handler_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = row {
                        let h: provisio_core::handler::Handler = row.try_into()?;
                        let since = h.failing_since.unwrap_or(now);
                        let limit = chrono::Duration::from_std(h.disable_after)
                            .unwrap_or(chrono::Duration::MAX);
                        if h.status == provisio_core::handler::HandlerStatus::Enabled
                            && now - since >= limit
                        {
                            let reason = format!(
                                "failing since {} (longer than its disable_after of {}s)",
                                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                                h.disable_after.as_secs()
                            );
                            sqlx::query(
                                "UPDATE handlers SET status = 'disabled', disabled_reason = $1, \
                                 updated_at = $2 WHERE id = $3",
                            )
                            .bind(&reason)
                            .bind($crate::rows::ts(now))
                            .bind(handler_id)
                            .execute(&mut *tx)
                            .await?;
                            let event = provisio_core::event::NewEvent::new(
                                "handler.disabled",
                                format!("handler:{}", h.id),
                                serde_json::json!({"handler": {
                                    "id": h.id, "name": h.name.as_str(), "kind": h.kind.as_str(),
                                    "failing_since": since, "reason": reason,
                                    "last_error": u.last_error,
                                }}),
                            );
                            insert_events_tx(&mut tx, self.clock.now(), std::slice::from_ref(&event)).await?;
                            health = $crate::HandlerHealth::Disabled;
                        }
                    }
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok(health)
            }

            async fn renew_deliveries(
                &self,
                owner: &str,
                ids: &[provisio_core::DeliveryId],
                lease_until: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let mut total = 0;
                for chunk in ids.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE deliveries SET lease_until = ");
                    qb.push_bind($crate::rows::ts(lease_until))
                        .push(" WHERE state = 'running' AND lease_owner = ")
                        .push_bind(owner)
                        .push(" AND id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.0);
                    }
                    qb.push(")");
                    total += qb.build().execute(self.writer()).await?.rows_affected();
                }
                Ok(total)
            }

            async fn requeue_expired_deliveries(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let r = sqlx::query(
                    "UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL, \
                     updated_at = $1 WHERE state = 'running' AND lease_until < $2",
                )
                .bind($crate::rows::ts(now))
                .bind($crate::rows::ts(now))
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected())
            }

            async fn get_delivery(
                &self,
                id: provisio_core::DeliveryId,
            ) -> $crate::Result<Option<provisio_core::handler::Delivery>> {
                one_by!(&self.pool, $crate::rows_hooks::DeliveryRow, "SELECT * FROM deliveries WHERE id = $1", id.0)
            }

            async fn list_deliveries(
                &self,
                f: &$crate::DeliveryFilter,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::handler::Delivery>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM deliveries WHERE 1 = 1");
                if let Some(h) = f.handler_id {
                    qb.push(" AND handler_id = ").push_bind(h.0);
                }
                if let Some(s) = f.state {
                    qb.push(" AND state = ").push_bind(s.as_str());
                }
                if let Some(e) = f.event_id {
                    qb.push(" AND event_id = ").push_bind(e.0);
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows_hooks::DeliveryRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |d: &provisio_core::handler::Delivery| d.id.0)
            }

            async fn delivery_attempts(
                &self,
                id: provisio_core::DeliveryId,
            ) -> $crate::Result<Vec<provisio_core::handler::DeliveryAttempt>> {
                let rows: Vec<$crate::rows_hooks::DeliveryAttemptRow> = sqlx::query_as(
                    "SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id",
                )
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn redeliver(
                &self,
                id: provisio_core::DeliveryId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<provisio_core::handler::Delivery>> {
                let row: Option<$crate::rows_hooks::DeliveryRow> = sqlx::query_as(
                    "UPDATE deliveries SET state = 'pending', next_at = $1, updated_at = $2 \
                     WHERE id = $3 AND state IN ('succeeded', 'failed') RETURNING *",
                )
                .bind($crate::rows::ts(now))
                .bind($crate::rows::ts(now))
                .bind(id.0)
                .fetch_optional(self.writer())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            // ---- rules ----

            async fn insert_rule(
                &self,
                r: &provisio_core::rule::NewRule,
            ) -> $crate::Result<provisio_core::rule::Rule> {
                let now = $crate::rows::ts(self.clock.now());
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: $crate::rows_hooks::RuleRow = sqlx::query_as(
                    "INSERT INTO rules (name, on_event, action, delay_secs, enabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                )
                .bind(r.name.as_str())
                .bind(r.on.as_str())
                .bind(sqlx::types::Json(&r.action))
                .bind(r.delay.as_secs() as i64)
                .bind(r.enabled)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let rule: provisio_core::rule::Rule = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "rule.created", &$crate::rows::rule_record(&rule)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(rule)
            }

            async fn get_rule(
                &self,
                id: provisio_core::RuleId,
            ) -> $crate::Result<Option<provisio_core::rule::Rule>> {
                one_by!(&self.pool, $crate::rows_hooks::RuleRow, "SELECT * FROM rules WHERE id = $1", id.0)
            }

            async fn get_rule_by_name(
                &self,
                name: &str,
            ) -> $crate::Result<Option<provisio_core::rule::Rule>> {
                one_by!(&self.pool, $crate::rows_hooks::RuleRow, "SELECT * FROM rules WHERE name = $1", name)
            }

            async fn update_rule(
                &self,
                id: provisio_core::RuleId,
                r: &provisio_core::rule::NewRule,
            ) -> $crate::Result<provisio_core::rule::Rule> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows_hooks::RuleRow> = sqlx::query_as(
                    "UPDATE rules SET name = $1, on_event = $2, action = $3, delay_secs = $4, \
                     enabled = $5, updated_at = $6 WHERE id = $7 RETURNING *",
                )
                .bind(r.name.as_str())
                .bind(r.on.as_str())
                .bind(sqlx::types::Json(&r.action))
                .bind(r.delay.as_secs() as i64)
                .bind(r.enabled)
                .bind($crate::rows::ts(self.clock.now()))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let rule: provisio_core::rule::Rule =
                    row.ok_or($crate::StoreError::NotFound)?.try_into()?;
                announce_record(&mut tx, self.clock.now(), "rule.updated", &$crate::rows::rule_record(&rule)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(rule)
            }

            async fn delete_rule(&self, id: provisio_core::RuleId) -> $crate::Result<bool> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                let row: Option<$crate::rows_hooks::RuleRow> =
                    sqlx::query_as("DELETE FROM rules WHERE id = $1 RETURNING *")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { return Ok(false) };
                let rule: provisio_core::rule::Rule = row.try_into()?;
                announce_record(&mut tx, self.clock.now(), "rule.deleted", &$crate::rows::rule_record(&rule)).await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(true)
            }

            async fn list_rules(&self) -> $crate::Result<Vec<provisio_core::rule::Rule>> {
                let rows: Vec<$crate::rows_hooks::RuleRow> =
                    sqlx::query_as("SELECT * FROM rules ORDER BY name")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn claim_rule_runs(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                lease_until: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> $crate::Result<Vec<provisio_core::rule::RuleRun>> {
                let now = $crate::rows::ts(now);
                let mut conn = self.claim_conn().await?;
                let mut tx = Self::begin_claim(&mut conn).await?;
                let sql = format!(
                    "UPDATE rule_runs SET state = 'running', lease_until = $1, updated_at = $2 \
                     WHERE id IN (SELECT id FROM (SELECT r.id FROM rule_runs r WHERE r.state = 'pending' \
                     AND r.due_at <= $3 ORDER BY r.id LIMIT $4{}) AS c) RETURNING *",
                    Self::LOCK_CLAUSE
                );
                let rows: Vec<$crate::rows_hooks::RuleRunRow> = sqlx::query_as(&sql)
                    .bind($crate::rows::ts(lease_until))
                    .bind(now)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                conn.ended_cleanly();
                let mut out = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<$crate::Result<Vec<provisio_core::rule::RuleRun>>>()?;
                out.sort_by_key(|r| r.id);
                Ok(out)
            }

            async fn finish_rule_run(
                &self,
                id: i64,
                state: provisio_core::rule::RuleRunState,
                result: &str,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "UPDATE rule_runs SET state = $1, result = $2, lease_until = NULL, updated_at = $3 \
                     WHERE id = $4",
                )
                .bind(state.as_str())
                .bind(result)
                .bind($crate::rows::ts(self.clock.now()))
                .bind(id)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn requeue_expired_rule_runs(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let r = sqlx::query(
                    "UPDATE rule_runs SET state = 'pending', lease_until = NULL, updated_at = $1 \
                     WHERE state = 'running' AND lease_until < $2",
                )
                .bind($crate::rows::ts(now))
                .bind($crate::rows::ts(now))
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected())
            }

            async fn trim_deliveries(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                batch: u32,
            ) -> $crate::Result<u64> {
                trim_rows!(self.writer(), "deliveries", "state NOT IN ('pending', 'running') AND updated_at < $1", before, batch)
            }

            async fn trim_rule_runs(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                batch: u32,
            ) -> $crate::Result<u64> {
                trim_rows!(self.writer(), "rule_runs", "state NOT IN ('pending', 'running') AND updated_at < $1", before, batch)
            }

            async fn list_rule_runs(
                &self,
                rule: Option<provisio_core::RuleId>,
                page: provisio_core::page::PageRequest,
            ) -> $crate::Result<provisio_core::page::Page<provisio_core::rule::RuleRun>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT * FROM rule_runs WHERE 1 = 1");
                if let Some(r) = rule {
                    qb.push(" AND rule_id = ").push_bind(r.0);
                }
                page_clause(&mut qb, page);
                let rows: Vec<$crate::rows_hooks::RuleRunRow> =
                    qb.build_query_as().fetch_all(&self.pool).await?;
                collect_page(rows, page, |r: &provisio_core::rule::RuleRun| r.id)
            }
        }

        fn patterns(h: &provisio_core::handler::NewHandler) -> Vec<&str> {
            h.events.iter().map(|p| p.as_str()).collect()
        }
    };
}

pub(crate) use impl_hook_store;
