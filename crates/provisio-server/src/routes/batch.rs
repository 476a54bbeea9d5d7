//! What the batch endpoints (`POST /v1/services/batch`, `/v1/clients/batch`) share: the
//! bound on their size, each item parsed on its own, and item keys turned into order keys.

use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::idempotency::{order_key, parse_key};

/// Records at most per batch request.
pub const MAX_BATCH: usize = 1000;

/// One item of a batch: its own idempotency key, and the record it places.
pub trait BatchItem: DeserializeOwned {
    type Record;
    fn idempotency_key(&self) -> Option<&str>;
    /// The record, placed under `order_key` when the item has a key.
    fn into_record(self, order_key: Option<String>) -> Self::Record;
}

/// The records of a batch, each parsed and keyed on its own: a bad item is its own error,
/// at its index, and never stops the others. `list` names the body's list in errors.
pub fn parse<T: BatchItem>(
    list: &str,
    raw: Vec<serde_json::Value>,
    api_key_id: i64,
) -> Result<Vec<Result<T::Record, ApiError>>, ApiError> {
    if raw.is_empty() || raw.len() > MAX_BATCH {
        return Err(ApiError::bad_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            list,
            "length",
            format!("must hold 1 to {MAX_BATCH} items"),
        ));
    }
    let mut keys = std::collections::HashMap::new();
    Ok(raw
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let item = crate::extract::parse_value::<T>(v)?;
            let key = match item.idempotency_key() {
                Some(k) => {
                    let k = parse_key(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency_key",
                        k.as_bytes(),
                    )?;
                    if let Some(first) = keys.insert(k.clone(), i) {
                        return Err(ApiError::bad_field(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "idempotency_key",
                            "unique",
                            format!("repeats the key of item {first}"),
                        ));
                    }
                    Some(order_key(api_key_id, &k))
                }
                None => None,
            };
            Ok(item.into_record(key))
        })
        .collect())
}

/// `created`, `replayed` and `failed` of a batch's result statuses.
pub fn counts(statuses: impl Iterator<Item = u16>) -> (usize, usize, usize) {
    statuses.fold((0, 0, 0), |(c, r, f), s| match s {
        201 => (c + 1, r, f),
        200 => (c, r + 1, f),
        _ => (c, r, f + 1),
    })
}
