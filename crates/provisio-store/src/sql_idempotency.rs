//! The SQL of [`crate::IdempotencyStore`], shared by both databases like `sql.rs`.

/// Implements [`crate::IdempotencyStore`] for a store type set up as `impl_store!` expects.
macro_rules! impl_idempotency_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::IdempotencyStore for $store {
            async fn claim_idempotency_key(
                &self,
                api_key_id: i64,
                key: &str,
                fingerprint: &str,
                now: chrono::DateTime<chrono::Utc>,
                locked_until: chrono::DateTime<chrono::Utc>,
                expired_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::IdempotencyClaim> {
                use $crate::rows::ts;
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                // A finished use past its lifetime no longer holds the key.
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 \
                     AND created_at < $3",
                )
                .bind(api_key_id)
                .bind(key)
                .bind(ts(expired_before))
                .execute(&mut *tx)
                .await?;
                let claimed: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO idempotency_keys (api_key_id, key, fingerprint, locked_until, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (api_key_id, key) DO NOTHING RETURNING id",
                )
                .bind(api_key_id)
                .bind(key)
                .bind(fingerprint)
                .bind(ts(locked_until))
                .bind(ts(now))
                .fetch_optional(&mut *tx)
                .await?;
                if claimed.is_some() {
                    tx.commit().await?;
                    wr.durable().await?;
                    return Ok($crate::IdempotencyClaim::Claimed);
                }
                // The request that held it died with its node: the same request takes it
                // over. Its effects, if any, are found by the operation's own key (an order
                // placed under the idempotency key is the service it placed).
                let taken = sqlx::query(
                    "UPDATE idempotency_keys SET locked_until = $1 WHERE api_key_id = $2 AND key = $3 \
                     AND status IS NULL AND locked_until < $4 AND fingerprint = $5",
                )
                .bind(ts(locked_until))
                .bind(api_key_id)
                .bind(key)
                .bind(ts(now))
                .bind(fingerprint)
                .execute(&mut *tx)
                .await?;
                if taken.rows_affected() == 1 {
                    tx.commit().await?;
                    wr.durable().await?;
                    return Ok($crate::IdempotencyClaim::Claimed);
                }
                let (fp, status, response, until): (String, Option<i64>, Option<Vec<u8>>, i64) =
                    sqlx::query_as(
                        "SELECT fingerprint, status, response, locked_until FROM idempotency_keys \
                         WHERE api_key_id = $1 AND key = $2",
                    )
                    .bind(api_key_id)
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(match (status, response) {
                    (Some(status), Some(response)) => $crate::IdempotencyClaim::Done {
                        fingerprint: fp,
                        status: u16::try_from(status)
                            .map_err(|_| $crate::StoreError::Corrupt(format!("idempotency status {status}")))?,
                        response: provisio_core::secret::Sealed(response),
                    },
                    _ => $crate::IdempotencyClaim::Running {
                        fingerprint: fp,
                        locked_until: $crate::rows::from_ts(until)?,
                    },
                })
            }

            async fn finish_idempotency_key(
                &self,
                api_key_id: i64,
                key: &str,
                status: u16,
                response: &provisio_core::secret::Sealed,
            ) -> $crate::Result<()> {
                sqlx::query(
                    "UPDATE idempotency_keys SET status = $1, response = $2 \
                     WHERE api_key_id = $3 AND key = $4",
                )
                .bind(i64::from(status))
                .bind(&response.0)
                .bind(api_key_id)
                .bind(key)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn release_idempotency_key(&self, api_key_id: i64, key: &str) -> $crate::Result<()> {
                sqlx::query(
                    "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND status IS NULL",
                )
                .bind(api_key_id)
                .bind(key)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn trim_idempotency_keys(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                batch: u32,
            ) -> $crate::Result<u64> {
                trim_rows!(self.writer(), "idempotency_keys", "created_at < $1", before, batch)
            }
        }
    };
}

pub(crate) use impl_idempotency_store;
