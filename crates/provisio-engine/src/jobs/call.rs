//! Module requests: the one place a request to a module is built, with its settings and
//! secrets opened, whether for a service's job (worker, login links) or for a server alone
//! (audit listings, usage pages, connection tests); and the one timed call.
//!
//! Secrets are opened here and nowhere else; what a module says back is redacted by the
//! registry's layer (`provisio_modules::redacting`), so callers need no list of secrets.

use std::sync::Arc;
use std::time::Duration;

use provisio_core::client::Client;
use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, ClientContext, Module, ModuleError,
    ProductContext, ServerContext, ServiceContext,
};
use provisio_core::server::Server;
use provisio_core::service::Service;
use provisio_core::settings::Settings;
use serde_json::Value;

use crate::{Engine, ProductView};

/// A module and the request to send it.
pub(crate) struct Prepared {
    pub module: Arc<dyn Module>,
    pub request: ActionRequest,
}

/// The records a service's request is made of, as the caller loaded them.
pub(crate) struct ServiceRecords<'a> {
    /// The server the call goes to: the service's, or the target of a transfer.
    pub server: &'a Server,
    pub product: &'a ProductView,
    pub service: &'a Service,
    pub client: Option<&'a Client>,
    /// For a change of package: the new product, whose settings modules read as
    /// `params.new_product`.
    pub new_product: Option<&'a ProductView>,
}

impl Engine {
    fn module_for(&self, server: &Server) -> Result<Arc<dyn Module>, String> {
        self.modules
            .get(&server.module)
            .cloned()
            .ok_or_else(|| format!("module '{}' is not installed", server.module))
    }

    fn open(&self, s: &Settings) -> Result<Settings, String> {
        self.cipher.open_settings(s).map_err(|e| e.to_string())
    }

    fn server_context(&self, server: &Server) -> Result<ServerContext, String> {
        Ok(ServerContext {
            id: server.id.0,
            name: server.name.to_string(),
            settings: self
                .open(&server.settings)
                .map_err(|_| "the server's secret settings could not be opened".to_string())?,
        })
    }

    /// A request about a server alone (`list_accounts`, `usage`, `test_connection`),
    /// with a fresh idempotency key and no parameters yet.
    pub(crate) fn server_request(
        &self,
        server: &Server,
        action: Action,
    ) -> Result<Prepared, String> {
        let module = self.module_for(server)?;
        let request = ActionRequest {
            action,
            idempotency_key: crate::jobs::request::new_idempotency_key(),
            server: self.server_context(server)?,
            product: ProductContext::default(),
            service: None,
            client: None,
            params: Settings::new(),
        };
        Ok(Prepared { module, request })
    }

    /// A request about one service: the effective product settings with the service's own
    /// overrides, every secret opened, and `params` (sealed as stored in the job) opened.
    pub(crate) fn service_request(
        &self,
        records: ServiceRecords<'_>,
        action: Action,
        idempotency_key: String,
        params: &Settings,
    ) -> Result<Prepared, String> {
        let ServiceRecords {
            server,
            product,
            service,
            client,
            new_product,
        } = records;
        let module = self.module_for(server)?;
        // A service's own overrides (a group edit's bigger quota) win over the product's,
        // and stay with it across packages.
        let with_overrides = |p: &ProductView| {
            let mut s = p.effective.clone();
            for (k, v) in &service.product_overrides {
                s.insert(k.clone(), v.clone());
            }
            s
        };
        let mut params = self.open(params)?;
        if let Some(new) = new_product {
            params.insert(
                "new_product".into(),
                Value::Object(self.open(&with_overrides(new))?),
            );
            params.insert(
                "new_product_name".into(),
                Value::String(new.product.name.to_string()),
            );
        }
        let request = ActionRequest {
            action,
            idempotency_key,
            server: self.server_context(server)?,
            product: ProductContext {
                id: product.product.id.0,
                name: product.product.name.to_string(),
                settings: self.open(&with_overrides(product))?,
            },
            service: Some(ServiceContext {
                id: service.id.0,
                username: service.username.to_string(),
                password: self
                    .cipher
                    .open(&service.password)
                    .map_err(|e| e.to_string())?,
                status: service.status.as_str().to_string(),
                settings: self.open(&service.settings)?,
                outputs: service.outputs.clone(),
            }),
            client: client.map(|c| ClientContext {
                id: c.id.0,
                name: c.name.to_string(),
                email: c.email.to_string(),
                custom_fields: c.custom_fields.clone(),
            }),
            params,
        };
        Ok(Prepared { module, request })
    }

    /// Calls the module, counting a call that outlives `limit` as an unknown outcome
    /// (the remote may have acted), and so is a panic inside the module.
    pub(crate) async fn call_module(
        &self,
        module: &dyn Module,
        request: &ActionRequest,
        limit: Duration,
    ) -> Result<ActionReply, ModuleError> {
        match tokio::time::timeout(limit, guarded(module, request)).await {
            Ok(r) => r,
            Err(_) => Err(ModuleError::unknown(format!(
                "the module did not answer within {}s",
                limit.as_secs()
            ))),
        }
    }

    /// Runs `test_connection` against a server now, outside the queue; the inner error
    /// is the module's (redacted) answer.
    pub async fn test_connection(
        &self,
        server: &crate::input::RecordRef,
    ) -> crate::Result<Result<(), String>> {
        let server = self.find_server(server).await?;
        let prepared = match self.server_request(&server, Action::TestConnection) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        if !prepared.module.info().can(Capability::TestConnection) {
            return Ok(Err(format!(
                "module '{}' has no connection test",
                server.module
            )));
        }
        let limit = self.options.jobs.call_timeout;
        Ok(self
            .call_module(prepared.module.as_ref(), &prepared.request, limit)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()))
    }

    /// Asks a service's module for a single sign-on link now, outside the queue (a link is
    /// short-lived and changes nothing, so there is nothing to retry or record).
    pub(crate) async fn module_login_url(&self, service: &Service) -> crate::Result<String> {
        let conflict = |message: String| crate::EngineError::Conflict {
            field: None,
            message,
        };
        let server = self
            .store
            .get_server(service.server_id)
            .await?
            .ok_or_else(|| conflict("the server no longer exists".into()))?;
        let product = self
            .get_product(&crate::input::RecordRef::Id(service.product_id.0))
            .await?;
        let client = self.store.get_client(service.client_id).await?;
        let prepared = self
            .service_request(
                ServiceRecords {
                    server: &server,
                    product: &product,
                    service,
                    client: client.as_ref(),
                    new_product: None,
                },
                Action::LoginUrl,
                crate::jobs::request::new_idempotency_key(),
                &Settings::new(),
            )
            .map_err(conflict)?;
        if !prepared.module.info().can(Capability::LoginUrl) {
            return Err(conflict(format!(
                "module '{}' cannot produce login links",
                server.module
            )));
        }
        let limit = self.options.jobs.call_timeout;
        match self
            .call_module(prepared.module.as_ref(), &prepared.request, limit)
            .await
        {
            Ok(reply) => reply
                .url
                .ok_or_else(|| conflict("the module answered without a link".into())),
            Err(e) => Err(conflict(format!(
                "the module could not produce a link: {}",
                e.message
            ))),
        }
    }
}

/// `module.call(request)`, with a panic inside the module turned into an unknown outcome of
/// this one call (it may have acted on the remote before it panicked), so a faulty module
/// costs an attempt, never the worker's task, its slot or its lease.
pub(crate) async fn guarded(
    module: &dyn Module,
    request: &ActionRequest,
) -> Result<ActionReply, ModuleError> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(module.call(request))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(payload) => {
            let why = panic_message(payload.as_ref());
            tracing::error!(
                module = %module.info().name,
                action = %request.action,
                server = request.server.id,
                service = request.service.as_ref().map(|s| s.id),
                panic = %why,
                "module call panicked"
            );
            Err(ModuleError::unknown(format!("the module panicked: {why}")))
        }
    }
}

/// The text a panic carried, when it carried one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "no message".to_string()
    }
}
