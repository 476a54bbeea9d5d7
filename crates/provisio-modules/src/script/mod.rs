//! The `script` module: runs a local executable that speaks JSON on stdin and stdout, so a
//! module can be written in any language. Its settings are declared here; the runner comes
//! with the action engine.

use provisio_core::module::{Capability, Module, ModuleInfo};
use provisio_core::settings::{Field, SettingsSchema};

pub struct ScriptModule {
    info: ModuleInfo,
}

impl ScriptModule {
    pub fn new() -> Self {
        let server_schema = SettingsSchema::new(vec![
            Field::string("executable", "Executable")
                .required()
                .pattern(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")
                .help("Path of the executable, relative to the configured modules directory; paths outside it are refused."),
            Field::integer("timeout_seconds", "Timeout (seconds)", Some(1), Some(3600))
                .default_value(30)
                .help("After this long the process group is killed and the attempt counts as an unknown outcome."),
            Field::secret("api_secret", "API secret")
                .help("A credential handed to the executable in server.settings; stored encrypted."),
        ])
        .allow_extra();
        // The executable alone knows what its product and service settings mean, so any
        // keys pass through to it.
        let product_schema = SettingsSchema::new(vec![]).allow_extra();
        let service_schema = SettingsSchema::new(vec![]).allow_extra();
        Self {
            info: ModuleInfo {
                name: "script".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Runs a local executable with a JSON request on stdin and a JSON reply on stdout.".into(),
                capabilities: vec![
                    Capability::Create,
                    Capability::Suspend,
                    Capability::Unsuspend,
                    Capability::Terminate,
                    Capability::ChangePassword,
                    Capability::ChangePackage,
                    Capability::Renew,
                    Capability::Lookup,
                    Capability::ListAccounts,
                    Capability::Usage,
                    Capability::TestConnection,
                ],
                custom_actions: vec![],
                server_schema,
                product_schema,
                service_schema,
            },
        }
    }
}

impl Default for ScriptModule {
    fn default() -> Self {
        Self::new()
    }
}

impl Module for ScriptModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }
}
