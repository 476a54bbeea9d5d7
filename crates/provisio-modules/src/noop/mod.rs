//! The `noop` module: every action succeeds at once without contacting anything. For
//! benchmarking the engine itself and for trying Provisio out with no remote system.

use provisio_core::module::{
    ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo,
};
use provisio_core::settings::SettingsSchema;

pub struct NoopModule {
    info: ModuleInfo,
}

impl NoopModule {
    pub fn new() -> Self {
        Self {
            info: ModuleInfo {
                name: "noop".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description:
                    "Succeeds at every action without contacting anything (benchmarks, trials)."
                        .into(),
                capabilities: Capability::lifecycle_and(&[Capability::TestConnection]),
                custom_actions: vec![],
                server_schema: SettingsSchema::new(vec![]).allow_extra(),
                product_schema: SettingsSchema::new(vec![]).allow_extra(),
                service_schema: SettingsSchema::new(vec![]).allow_extra(),
            },
        }
    }
}

impl Default for NoopModule {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Module for NoopModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    async fn call(&self, _request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        Ok(ActionReply::default())
    }
}
