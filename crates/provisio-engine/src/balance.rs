//! Client balance transactions: input checked, then applied by the store in one transaction
//! (balance, transaction record and zero-crossing events together); a repeated idempotency
//! key replays the stored transaction, or is refused when it named a different one.

use provisio_core::client::{
    NewTransaction, Transaction, DESCRIPTION_MAX_LEN, IDEMPOTENCY_KEY_MAX_LEN,
};
use provisio_core::page::{Page, PageRequest};
use provisio_core::ClientId;
use provisio_store::{StoreError, TransactionOutcome};

use crate::error::Problems;
use crate::input::TransactionCreate;
use crate::{Engine, EngineError, Result};

/// Parses a transaction request, naming every bad field.
pub(crate) fn parse_transaction(input: TransactionCreate) -> Result<NewTransaction> {
    let mut p = Problems::default();
    if input.amount_minor <= 0 {
        p.push("amount_minor", "min", "must be a positive integer");
    }
    let key = &input.idempotency_key;
    if key.is_empty() {
        p.push("idempotency_key", "required", "must not be empty");
    } else if key.chars().count() > IDEMPOTENCY_KEY_MAX_LEN {
        p.push(
            "idempotency_key",
            "max_length",
            format!("must be at most {IDEMPOTENCY_KEY_MAX_LEN} characters"),
        );
    } else if key.chars().any(char::is_control) {
        p.push(
            "idempotency_key",
            "pattern",
            "must not contain control characters",
        );
    }
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_MAX_LEN)
    {
        p.push(
            "description",
            "max_length",
            format!("must be at most {DESCRIPTION_MAX_LEN} characters"),
        );
    }
    p.finish()?;
    Ok(NewTransaction {
        kind: input.kind,
        amount_minor: input.amount_minor,
        idempotency_key: input.idempotency_key,
        description: input.description,
    })
}

impl Engine {
    /// Applies a balance transaction to a client (archived ones too: payments often arrive
    /// after a client left). A replay (`replayed`) changed nothing.
    pub async fn apply_transaction(
        &self,
        client: ClientId,
        input: TransactionCreate,
    ) -> Result<TransactionOutcome> {
        let new = parse_transaction(input)?;
        let outcome = match self.store.apply_transaction(client, &new).await {
            Err(StoreError::NotFound) => {
                return Err(EngineError::NotFound {
                    what: "client",
                    key: client.to_string(),
                })
            }
            other => other?,
        };
        if outcome.replayed && !outcome.transaction.is_replay_of(&new) {
            let t = &outcome.transaction;
            return Err(EngineError::Conflict {
                field: Some("idempotency_key".into()),
                message: format!(
                    "idempotency_key was already used for transaction {} ({} of {}); \
                     use a new key for a different transaction",
                    t.id,
                    t.kind.as_str(),
                    t.amount_minor
                ),
            });
        }
        Ok(outcome)
    }

    /// A client's transactions, oldest first.
    pub async fn list_transactions(
        &self,
        client: ClientId,
        page: PageRequest,
    ) -> Result<Page<Transaction>> {
        self.get_client(client).await?;
        Ok(self.store.list_transactions(client, page).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisio_core::client::TransactionKind;

    fn input(amount: i64, key: &str, description: Option<&str>) -> TransactionCreate {
        TransactionCreate {
            kind: TransactionKind::Payment,
            amount_minor: amount,
            idempotency_key: key.into(),
            description: description.map(Into::into),
        }
    }

    fn fields(r: Result<NewTransaction>) -> Vec<String> {
        match r {
            Err(EngineError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(parse_transaction(input(0, "", Some(&"x".repeat(501))))),
            ["amount_minor", "idempotency_key", "description"]
        );
        assert_eq!(
            fields(parse_transaction(input(-5, &"k".repeat(101), None))),
            ["amount_minor", "idempotency_key"]
        );
        assert_eq!(
            fields(parse_transaction(input(1, "a\nb", None))),
            ["idempotency_key"]
        );
        let ok = parse_transaction(input(1, &"é".repeat(100), Some(&"é".repeat(500)))).unwrap();
        assert_eq!(ok.delta(), 1);
    }
}
