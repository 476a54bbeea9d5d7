//! Provisio's built-in modules, one folder each, and the [`Registry`] that finds them by name.
//!
//! Modules talk to remote systems; they never touch the store.

pub mod http;
pub mod noop;
pub mod outbound;
pub mod postgres;
pub mod radius;
pub mod render;
pub mod scim;
pub mod script;
pub mod trace;
pub mod whmcs;

use std::collections::BTreeMap;
use std::sync::Arc;

use provisio_core::module::{
    ActionReply, ActionRequest, Module, ModuleError, ModuleInfo, SchemaScope, Secrets,
};
use provisio_core::settings::{FieldError, Settings};

/// What the built-in modules may reach and how much of a reply they read, from the
/// instance's configuration.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    /// Where the `script` module finds executables; paths outside it are refused.
    pub modules_dir: std::path::PathBuf,
    /// The addresses the `http`, `scim`, `postgres` and `radius` modules may connect to.
    pub outbound: outbound::OutboundPolicy,
    /// The most of one answer the `http` and `scim` modules read.
    pub max_reply_bytes: usize,
    /// The directory the `radius` module's SQLite databases must be in; none are allowed
    /// without it.
    pub radius_sqlite_dir: Option<std::path::PathBuf>,
    /// The fuel and output bounds of every template render (`[templates]`).
    pub templates: render::TemplateLimits,
}

/// The default cap on a module's reply: no provisioning answer comes near it.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

impl Default for ModuleOptions {
    fn default() -> Self {
        Self {
            modules_dir: std::path::PathBuf::from("modules"),
            outbound: outbound::OutboundPolicy::default(),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            radius_sqlite_dir: None,
            templates: render::TemplateLimits::default(),
        }
    }
}

/// The modules an instance knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    modules: BTreeMap<String, Arc<dyn Module>>,
}

impl Registry {
    pub fn empty() -> Self {
        Self::default()
    }

    /// The modules that ship with Provisio, with the default options.
    pub fn builtin() -> Self {
        Self::builtin_with(&ModuleOptions::default())
    }

    /// The built-in modules with the default outbound policy, the `script` module confined
    /// to `modules_dir`.
    pub fn builtin_in(modules_dir: std::path::PathBuf) -> Self {
        Self::builtin_with(&ModuleOptions {
            modules_dir,
            ..ModuleOptions::default()
        })
    }

    /// The built-in modules, configured by `options`.
    pub fn builtin_with(options: &ModuleOptions) -> Self {
        let mut r = Self::empty();
        r.register(Arc::new(http::HttpModule::with(options)));
        r.register(Arc::new(noop::NoopModule::new()));
        r.register(Arc::new(radius::RadiusModule::with(options)));
        r.register(Arc::new(postgres::PostgresModule::with(options)));
        r.register(Arc::new(scim::ScimModule::with(options)));
        r.register(Arc::new(script::ScriptModule::new(
            options.modules_dir.clone(),
        )));
        for m in whmcs::discover(&options.modules_dir, std::path::Path::new(whmcs::PHP)) {
            r.register(Arc::new(m));
        }
        r
    }

    /// Adds a module; one of the same name is replaced. Panics on a schema that does not
    /// check out, since schemas are fixed in code and a bad one is a programming error.
    pub fn register(&mut self, module: Arc<dyn Module>) {
        let info = module.info();
        for scope in [
            provisio_core::module::SchemaScope::Server,
            provisio_core::module::SchemaScope::Product,
            provisio_core::module::SchemaScope::Service,
        ] {
            if let Err(e) = info.schema(scope).check() {
                panic!(
                    "module {} declares a bad {} schema: {e}",
                    info.name,
                    scope.as_str()
                );
            }
        }
        let name = info.name.clone();
        self.modules.insert(name, redacting(module));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Module>> {
        self.modules.get(name)
    }

    pub fn info(&self, name: &str) -> Option<&ModuleInfo> {
        self.modules.get(name).map(|m| m.info())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    pub fn infos(&self) -> impl Iterator<Item = &ModuleInfo> {
        self.modules.values().map(|m| m.info())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.modules.keys()).finish()
    }
}

/// `module` behind the one layer that keeps secrets in: every error it returns has the
/// request's [`Secrets`] taken out, and a failure is logged here, redacted, so modules
/// neither redact their messages on the way out nor log them. The registry puts every
/// module it holds behind this layer.
pub fn redacting(module: Arc<dyn Module>) -> Arc<dyn Module> {
    Arc::new(Redacting(module))
}

/// The secrets a call of `module` with `request` carries.
pub fn secrets_of(module: &dyn Module, request: &ActionRequest) -> Secrets {
    let mut secrets = Secrets::of(request, module.info());
    secrets.extend(module.more_secrets(request));
    secrets
}

struct Redacting(Arc<dyn Module>);

#[async_trait::async_trait]
impl Module for Redacting {
    fn info(&self) -> &ModuleInfo {
        self.0.info()
    }

    fn check_settings(&self, scope: SchemaScope, settings: &Settings) -> Vec<FieldError> {
        self.0.check_settings(scope, settings)
    }

    fn custom_actions(&self, server_settings: &Settings) -> Vec<String> {
        self.0.custom_actions(server_settings)
    }

    fn more_secrets(&self, request: &ActionRequest) -> Vec<String> {
        self.0.more_secrets(request)
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        self.0.call(request).await.map_err(|e| {
            let message = secrets_of(self.0.as_ref(), request).redact(&e.message);
            tracing::debug!(
                module = %self.0.info().name,
                action = %request.action,
                server = request.server.id,
                kind = e.kind.as_str(),
                error = %message,
                "module call failed"
            );
            ModuleError {
                kind: e.kind,
                message,
            }
        })
    }
}
