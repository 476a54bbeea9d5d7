//! The SQL of [`crate::SecretStore`], shared by both databases like `sql.rs`. The table and
//! column names come only from [`crate::SealedColumn::location`], never from callers.

/// Implements [`crate::SecretStore`] for a store type set up as `impl_store!` expects.
macro_rules! impl_secret_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::SecretStore for $store {
            async fn secret_keys(&self) -> $crate::Result<Vec<$crate::SecretKeyRecord>> {
                let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT kid, check_value, state, created_at, updated_at FROM secret_keys \
                     ORDER BY CASE state WHEN 'current' THEN 0 WHEN 'retiring' THEN 1 ELSE 2 END, created_at",
                )
                .fetch_all(self.writer())
                .await?;
                rows.into_iter()
                    .map(|(kid, check_value, state, created, updated)| {
                        Ok($crate::SecretKeyRecord {
                            state: $crate::SecretKeyState::parse(&state).ok_or_else(|| {
                                $crate::StoreError::Corrupt(format!("secret_keys.state {state:?}"))
                            })?,
                            kid,
                            check_value,
                            created_at: $crate::rows::from_ts(created)?,
                            updated_at: $crate::rows::from_ts(updated)?,
                        })
                    })
                    .collect()
            }

            async fn record_first_secret_key(
                &self,
                kid: &str,
                check_value: &str,
            ) -> $crate::Result<Vec<$crate::SecretKeyRecord>> {
                let now = $crate::rows::ts(self.clock.now());
                // The unique index on the current key turns a second node's insert into
                // nothing, and it then reads the first node's key.
                sqlx::query(
                    "INSERT INTO secret_keys (kid, check_value, state, created_at, updated_at) \
                     SELECT $1, $2, 'current', $3, $3 WHERE NOT EXISTS (SELECT 1 FROM secret_keys) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(kid)
                .bind(check_value)
                .bind(now)
                .execute(self.writer())
                .await?;
                self.secret_keys().await
            }

            async fn begin_secret_key_rotation(
                &self,
                kid: &str,
                check_value: &str,
            ) -> $crate::Result<()> {
                let now = $crate::rows::ts(self.clock.now());
                // Writes only, no read first: a SQLite transaction that read before writing
                // fails when another connection wrote in between.
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                sqlx::query(
                    "UPDATE secret_keys SET state = 'retiring', updated_at = $1 \
                     WHERE state = 'current' AND kid <> $2",
                )
                .bind(now)
                .bind(kid)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO secret_keys (kid, check_value, state, created_at, updated_at) \
                     VALUES ($1, $2, 'current', $3, $3) \
                     ON CONFLICT (kid) DO UPDATE SET state = 'current', updated_at = CASE \
                     WHEN secret_keys.state = 'current' THEN secret_keys.updated_at ELSE $3 END",
                )
                .bind(kid)
                .bind(check_value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(())
            }

            async fn retire_secret_keys(&self) -> $crate::Result<u64> {
                let now = $crate::rows::ts(self.clock.now());
                let r = sqlx::query(
                    "UPDATE secret_keys SET state = 'retired', updated_at = $1 WHERE state = 'retiring'",
                )
                .bind(now)
                .execute(self.writer())
                .await?;
                Ok(r.rows_affected())
            }

            async fn sealed_cells(
                &self,
                column: $crate::SealedColumn,
                skip_prefix: &[u8],
                after: i64,
                limit: u32,
            ) -> $crate::Result<Vec<(i64, $crate::SealedCell)>> {
                let (table, col) = column.location();
                if column.is_json() {
                    let rows: Vec<(i64, String)> = sqlx::query_as(&format!(
                        "SELECT id, CAST({col} AS TEXT) FROM {table} \
                         WHERE id > $1 AND CAST({col} AS TEXT) LIKE '%\"$sealed\"%' ORDER BY id LIMIT $2"
                    ))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(id, t)| (id, $crate::SealedCell::Json(t)))
                        .collect())
                } else {
                    // An empty prefix skips nothing (every value starts with it).
                    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
                        "SELECT id, {col} FROM {table} WHERE id > $1 AND {col} IS NOT NULL \
                         AND ($2 = 0 OR substr({col}, 1, $2) <> $3) ORDER BY id LIMIT $4"
                    ))
                    .bind(after)
                    .bind(skip_prefix.len() as i32)
                    .bind(skip_prefix.to_vec())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(id, b)| (id, $crate::SealedCell::Bytes(b)))
                        .collect())
                }
            }

            async fn replace_sealed(
                &self,
                column: $crate::SealedColumn,
                rewrites: &[(i64, $crate::SealedCell, $crate::SealedCell)],
            ) -> $crate::Result<u64> {
                let (table, col) = column.location();
                let json_sql =
                    format!("UPDATE {table} SET {col} = $1 WHERE id = $2 AND CAST({col} AS TEXT) = $3");
                let bytes_sql = format!("UPDATE {table} SET {col} = $1 WHERE id = $2 AND {col} = $3");
                let mut written = 0;
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                for (id, old, new) in rewrites {
                    let r = match (old, new) {
                        ($crate::SealedCell::Json(old), $crate::SealedCell::Json(new)) => {
                            let new: serde_json::Value = serde_json::from_str(new).map_err(|e| {
                                $crate::StoreError::Corrupt(format!("{column}: {e}"))
                            })?;
                            sqlx::query(&json_sql)
                                .bind(sqlx::types::Json(new))
                                .bind(*id)
                                .bind(old)
                                .execute(&mut *tx)
                                .await?
                        }
                        ($crate::SealedCell::Bytes(old), $crate::SealedCell::Bytes(new)) => {
                            sqlx::query(&bytes_sql)
                                .bind(new.clone())
                                .bind(*id)
                                .bind(old.clone())
                                .execute(&mut *tx)
                                .await?
                        }
                        _ => {
                            return Err($crate::StoreError::Corrupt(format!(
                                "{column}: a rewrite must keep the kind of the cell"
                            )))
                        }
                    };
                    written += r.rows_affected();
                }
                tx.commit().await?;
                wr.durable().await?;
                Ok(written)
            }
        }
    };
}

pub(crate) use impl_secret_store;
