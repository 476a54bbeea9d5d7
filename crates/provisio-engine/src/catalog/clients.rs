//! Clients: create, change, archive, list and delete them; custom fields and the events a change announces.

use super::*;

impl Engine {
    pub async fn create_client(&self, input: ClientCreate) -> Result<Client> {
        if let Some(c) = self.created_before(input.order_key.as_deref()).await? {
            return Ok(c);
        }
        let new = self.prepare_client(input).await?;
        Ok(self.store.insert_client(&new, &["client.created"]).await?)
    }

    /// Creates many clients: each is checked on its own, and the valid ones are stored
    /// together in one transaction. Answers each one's result, and whether it was created
    /// before under its key, in the order given.
    pub async fn create_clients(
        &self,
        inputs: Vec<ClientCreate>,
    ) -> Result<Vec<Result<(Client, bool)>>> {
        let mut results: Vec<Option<Result<(Client, bool)>>> = Vec::with_capacity(inputs.len());
        let mut ready: Vec<(usize, NewClient)> = Vec::new();
        for input in inputs {
            let i = results.len();
            let found = match self.created_before(input.order_key.as_deref()).await {
                Ok(f) => f,
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            };
            if let Some(c) = found {
                results.push(Some(Ok((c, true))));
                continue;
            }
            match self.prepare_client(input).await {
                Ok(new) => {
                    results.push(None);
                    ready.push((i, new));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let rows: Vec<NewClient> = ready.iter().map(|(_, c)| c.clone()).collect();
        let stored: Vec<Result<Client>> =
            match self.store.insert_clients(&rows, &["client.created"]).await {
                Ok(all) => all.into_iter().map(Ok).collect(),
                // One conflicts (an external id taken, perhaps by another of this batch):
                // store each alone, so only that one fails.
                Err(provisio_store::StoreError::Conflict { .. }) => {
                    let mut each = Vec::with_capacity(rows.len());
                    for c in &rows {
                        each.push(
                            self.store
                                .insert_client(c, &["client.created"])
                                .await
                                .map_err(EngineError::from),
                        );
                    }
                    each
                }
                Err(e) => return Err(e.into()),
            };
        for ((i, _), r) in ready.iter().zip(stored) {
            results[*i] = Some(r.map(|c| (c, false)));
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every client has a result"))
            .collect())
    }

    async fn created_before(&self, key: Option<&str>) -> Result<Option<Client>> {
        match key {
            Some(k) => Ok(self.store.find_client_by_order_key(k).await?),
            None => Ok(None),
        }
    }

    /// Checks a new client and asks the gates; the client to store.
    async fn prepare_client(&self, input: ClientCreate) -> Result<NewClient> {
        let mut p = Problems::default();
        let name = p.take("name", DisplayName::parse(&input.name));
        let email = p.take("email", Email::parse(&input.email));
        let currency = match &input.currency {
            Some(c) => p.take("currency", Currency::parse(c)),
            None => Some(self.options.default_currency.clone()),
        };
        check_custom_fields(
            &mut p,
            input.custom_fields.iter().map(|(k, v)| (k, Some(v))),
        );
        let reseller_id = match input.reseller_id {
            Some(r) => self.known_reseller(&mut p, r).await?,
            None => None,
        };
        let external_id = input
            .external_id
            .as_deref()
            .and_then(|e| p.take("external_id", ExternalId::parse(e)));
        p.finish()?;
        let new = NewClient {
            name: name.expect("checked"),
            email: email.expect("checked"),
            status: input.status.unwrap_or(ClientStatus::Active),
            balance_minor: input.balance_minor.unwrap_or(0),
            currency: currency.expect("checked"),
            custom_fields: input.custom_fields,
            reseller_id,
            external_id,
            order_key: input.order_key,
        };
        let payload = serde_json::json!({"client": {
            "name": new.name.as_str(), "email": new.email.as_str(), "status": new.status,
            "balance_minor": new.balance_minor, "currency": new.currency.as_str(),
            "custom_fields": new.custom_fields,
            "external_id": new.external_id,
        }});
        self.run_gates(
            "client.create.before",
            payload,
            &mut crate::hooks::gates::no_changes("client data"),
        )
        .await?;
        Ok(new)
    }

    /// A reseller id the input names, if that reseller exists; a problem on `reseller_id`
    /// if not.
    async fn known_reseller(
        &self,
        p: &mut Problems,
        id: i64,
    ) -> Result<Option<provisio_core::ResellerId>> {
        let id = provisio_core::ResellerId(id);
        if self.store.get_reseller(id).await?.is_none() {
            p.push("reseller_id", "exists", format!("no reseller {id}"));
            return Ok(None);
        }
        Ok(Some(id))
    }

    pub async fn get_client(&self, id: ClientId) -> Result<Client> {
        self.store
            .get_client(id)
            .await?
            .ok_or_else(|| not_found("client", id))
    }

    pub async fn update_client(&self, id: ClientId, patch: ClientPatch) -> Result<Client> {
        let before = self.get_client(id).await?;
        let mut client = before.clone();
        let mut p = Problems::default();
        if let Some(n) = &patch.name {
            if let Some(n) = p.take("name", DisplayName::parse(n)) {
                client.name = n;
            }
        }
        if let Some(e) = &patch.email {
            if let Some(e) = p.take("email", Email::parse(e)) {
                client.email = e;
            }
        }
        if let Some(cf) = &patch.custom_fields {
            check_custom_fields(&mut p, cf.iter().map(|(k, v)| (k, v.as_ref())));
        }
        if let Some(r) = patch.reseller_id {
            if let Some(r) = self.known_reseller(&mut p, r).await? {
                client.reseller_id = Some(r);
            }
        }
        match &patch.external_id {
            crate::patch::Patch::Keep => {}
            crate::patch::Patch::Clear => client.external_id = None,
            crate::patch::Patch::Set(e) => {
                if let Some(e) = p.take("external_id", ExternalId::parse(e)) {
                    client.external_id = Some(e);
                }
            }
        }
        p.finish()?;
        if let Some(s) = patch.status {
            client.status = s;
        }
        if let Some(cf) = patch.custom_fields {
            apply_custom_fields(&mut client.custom_fields, cf);
        }
        let announce = client_changes(&before, &client);
        self.run_gates(
            "client.update.before",
            serde_json::json!({"client": before, "changed": client}),
            &mut crate::hooks::gates::no_changes("client data"),
        )
        .await?;
        Ok(self.store.update_client(&client, &announce).await?)
    }

    pub async fn archive_client(&self, id: ClientId) -> Result<Client> {
        let before = self.get_client(id).await?;
        let mut client = before.clone();
        client.status = ClientStatus::Archived;
        let announce = client_changes(&before, &client);
        Ok(self.store.update_client(&client, &announce).await?)
    }

    pub async fn delete_client(&self, id: ClientId) -> Result<()> {
        let client = self.get_client(id).await?;
        let services = self
            .store
            .count_services(&ServiceFilter {
                client_id: Some(id),
                ..Default::default()
            })
            .await?;
        if services > 0 {
            return Err(conflict(format!(
                "client {id} has {services} service(s); delete them first, or archive the client"
            )));
        }
        let transactions = self
            .store
            .list_transactions(id, PageRequest::first(1))
            .await?;
        if !transactions.items.is_empty() {
            return Err(conflict(format!(
                "client {id} has balance transactions, which are kept for accounting; archive the client instead"
            )));
        }
        self.run_gates(
            "client.delete.before",
            serde_json::json!({ "client": client }),
            &mut crate::hooks::gates::no_changes("client data"),
        )
        .await?;
        self.store.delete_client(id, &["client.deleted"]).await?;
        Ok(())
    }

    pub async fn list_clients(&self, f: &ClientFilter, page: PageRequest) -> Result<Page<Client>> {
        Ok(self.store.list_clients(f, page).await?)
    }
}

/// The events a change of a client announces: `client.updated` for any change, plus
/// `client.archived` and `client.custom_fields_updated` when those parts changed.
fn client_changes(before: &Client, after: &Client) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    let fields_changed = before.custom_fields != after.custom_fields;
    let archived =
        before.status != ClientStatus::Archived && after.status == ClientStatus::Archived;
    if before.name != after.name
        || before.email != after.email
        || before.status != after.status
        || before.external_id != after.external_id
        || before.reseller_id != after.reseller_id
        || fields_changed
    {
        kinds.push("client.updated");
    }
    if archived {
        kinds.push("client.archived");
    }
    if fields_changed {
        kinds.push("client.custom_fields_updated");
    }
    kinds
}

fn apply_custom_fields(
    fields: &mut CustomFields,
    patch: std::collections::BTreeMap<String, Option<String>>,
) {
    for (k, v) in patch {
        match v {
            Some(v) => {
                fields.insert(k, v);
            }
            None => {
                fields.remove(&k);
            }
        }
    }
}
