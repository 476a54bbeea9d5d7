//! Planning an action: the one set of rules an action request passes before it becomes a
//! job, whoever asks (the API, group operations, automation rules). The action must be a
//! service action the server's module can run, its transition allowed from the service's
//! projected status, and its input only the fields that apply, checked and turned into the
//! job's parameters (secrets sealed).
//!
//! The rules are plain functions of what the caller loaded, so they are tested without a
//! store, and a batch checks many members against one loaded server.

use chrono::Utc;
use provisio_core::job::check_transition;
use provisio_core::module::{Action, ModuleInfo};
use provisio_core::product::Product;
use provisio_core::secret::{generate_password, Cipher};
use provisio_core::server::Server;
use provisio_core::service::{ServiceStatus, SuspendReason};
use provisio_core::settings::Settings;
use provisio_core::ProductId;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::error::Problems;
use crate::input::{ActionInput, Secret};
use crate::{EngineError, Result};

/// What an action is checked against: the service's server and module, and the status the
/// service will have once its open jobs have run.
pub(crate) struct Target<'a> {
    pub server: &'a Server,
    /// `None` when the server's module is not installed.
    pub module: Option<&'a ModuleInfo>,
    /// The custom actions the server offers.
    pub offered: &'a [String],
    pub status: ServiceStatus,
    pub product_id: ProductId,
}

/// Whether `action` may run on the target: [`check_capable`], and allowed from the
/// projected status.
pub(crate) fn check_runnable(t: &Target<'_>, action: &Action) -> Result<()> {
    check_capable(t, action)?;
    check_transition(t.status, action).map_err(conflict)
}

/// Whether the target's server can run `action` at all, whatever the service's status:
/// offered, within the module's capabilities, and a service action.
pub(crate) fn check_capable(t: &Target<'_>, action: &Action) -> Result<()> {
    if let Action::Custom(name) = action {
        if !t.offered.contains(name) {
            return Err(EngineError::NotFound {
                what: "action",
                key: format!(
                    "'{name}' on server '{}' (its custom actions: {})",
                    t.server.name,
                    if t.offered.is_empty() {
                        "none".to_string()
                    } else {
                        t.offered.join(", ")
                    }
                ),
            });
        }
    }
    match (t.module, action.capability()) {
        (None, _) => {
            return Err(conflict(format!(
                "server '{}' uses module '{}', which is not installed",
                t.server.name, t.server.module
            )))
        }
        (Some(m), Some(cap)) if !m.can(cap) => {
            return Err(conflict(format!("module '{}' cannot {action}", m.name)))
        }
        _ => {}
    }
    if !action.is_service_action() {
        let mut bad = Problems::default();
        bad.push(
            "action",
            "enum",
            format!("'{action}' is not a service action"),
        );
        return Err(EngineError::Invalid(bad.0));
    }
    Ok(())
}

/// The new product a change of package names, as the caller looked it up.
pub(crate) enum NewProduct {
    /// The action takes no product, or none was given.
    None,
    Found(Box<Product>),
    /// The reference matched no product.
    Missing,
}

/// Checks the input of `action` and returns the job's parameters. Fields that do not
/// belong to the action are refused rather than ignored; every problem is reported at once.
pub(crate) fn params(
    cipher: &Cipher,
    now: chrono::DateTime<Utc>,
    t: &Target<'_>,
    action: &Action,
    input: &ActionInput,
    new_product: NewProduct,
) -> Result<Settings> {
    let mut p = Problems::default();
    let mut params = Settings::new();
    match action {
        Action::Suspend => {
            let reason =
                SuspendReason::from(input.reason.clone().unwrap_or_else(|| "admin".into()));
            if reason.as_str().trim().is_empty() || reason.as_str().len() > 200 {
                p.push("reason", "length", "must be 1 to 200 characters");
            }
            if let Some(u) = input.until {
                if u <= now {
                    p.push("until", "future", "must be in the future");
                }
                params.insert("until".into(), Value::String(u.to_rfc3339()));
            }
            params.insert("reason".into(), Value::String(reason.as_str().to_string()));
        }
        Action::ChangePassword => {
            let pw = input
                .password
                .clone()
                .map(Secret::into_secret)
                .unwrap_or_else(|| generate_password(16));
            let n = pw.expose_secret().chars().count();
            if !(8..=128).contains(&n) {
                p.push("password", "length", "must be 8 to 128 characters");
            }
            let sealed = cipher.seal_str(&pw);
            params.insert("new_password".into(), crate::catalog::sealed_value(&sealed));
        }
        Action::ChangePackage => match (&input.product, new_product) {
            (None, _) => p.push("product", "required", "is required for change-package"),
            (Some(r), NewProduct::Missing | NewProduct::None) => {
                p.push("product", "exists", format!("no product {r}"))
            }
            (Some(_), NewProduct::Found(prod)) if prod.module != t.server.module => p.push(
                "product",
                "module",
                format!(
                    "product '{}' uses module '{}', the service's server '{}'",
                    prod.name, prod.module, t.server.module
                ),
            ),
            (Some(_), NewProduct::Found(prod)) if prod.id == t.product_id => {
                p.push("product", "same", "is already the service's product")
            }
            (Some(_), NewProduct::Found(prod)) => {
                params.insert("product_id".into(), Value::from(prod.id.0));
            }
        },
        _ => {}
    }
    let stray = [
        (
            "reason",
            input.reason.is_some() && *action != Action::Suspend,
        ),
        ("until", input.until.is_some() && *action != Action::Suspend),
        (
            "password",
            input.password.is_some() && *action != Action::ChangePassword,
        ),
        (
            "product",
            input.product.is_some() && *action != Action::ChangePackage,
        ),
    ];
    for (field, bad) in stray {
        if bad {
            p.push(
                field,
                "not_applicable",
                format!("does not apply to {action}"),
            );
        }
    }
    p.finish()?;
    Ok(params)
}

fn conflict(message: String) -> EngineError {
    EngineError::Conflict {
        field: None,
        message,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Fixed times for the checks, no database.
mod tests {
    use super::*;
    use provisio_core::module::Capability;
    use provisio_core::settings::SettingsSchema;
    use provisio_core::text::Handle;
    use provisio_core::ServerId;

    fn server() -> Server {
        let now = Utc::now();
        Server {
            id: ServerId(1),
            name: Handle::parse("edge-1").unwrap(),
            module: "noop".into(),
            group: Handle::parse("default").unwrap(),
            settings: Settings::new(),
            max_concurrent: 4,
            max_per_second: None,
            enabled: true,
            created_at: now,
            updated_at: now,
        }
    }

    fn module(caps: &[Capability]) -> ModuleInfo {
        ModuleInfo {
            name: "noop".into(),
            version: "1".into(),
            description: String::new(),
            capabilities: caps.to_vec(),
            custom_actions: vec![],
            server_schema: SettingsSchema::new(vec![]),
            product_schema: SettingsSchema::new(vec![]),
            service_schema: SettingsSchema::new(vec![]),
        }
    }

    fn target<'a>(
        server: &'a Server,
        module: Option<&'a ModuleInfo>,
        offered: &'a [String],
        status: ServiceStatus,
    ) -> Target<'a> {
        Target {
            server,
            module,
            offered,
            status,
            product_id: ProductId(1),
        }
    }

    fn rule(e: EngineError) -> String {
        match e {
            EngineError::Invalid(list) => list
                .iter()
                .map(|f| format!("{}:{}", f.field, f.rule))
                .collect::<Vec<_>>()
                .join(","),
            EngineError::Conflict { message, .. } => format!("conflict: {message}"),
            EngineError::NotFound { what, key } => format!("not found: {what} {key}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn only_what_the_module_and_the_lifecycle_allow_runs() {
        let s = server();
        let all = module(&Capability::LIFECYCLE);
        let no_suspend = module(&[Capability::Create, Capability::Terminate]);
        let offered = vec!["reboot".to_string()];
        let active = target(&s, Some(&all), &offered, ServiceStatus::Active);
        assert!(check_runnable(&active, &Action::Suspend).is_ok());
        assert!(check_runnable(&active, &Action::Custom("reboot".into())).is_ok());
        let e = rule(check_runnable(&active, &Action::Custom("wipe".into())).unwrap_err());
        assert!(
            e.contains("not found: action 'wipe'") && e.contains("reboot"),
            "{e}"
        );
        // A second create while one is queued (the projected status is then active).
        assert!(rule(check_runnable(&active, &Action::Create).unwrap_err()).starts_with("conflict"));
        let limited = target(&s, Some(&no_suspend), &[], ServiceStatus::Active);
        assert_eq!(
            rule(check_runnable(&limited, &Action::Suspend).unwrap_err()),
            "conflict: module 'noop' cannot suspend"
        );
        let missing = target(&s, None, &[], ServiceStatus::Active);
        assert!(
            rule(check_runnable(&missing, &Action::Suspend).unwrap_err())
                .contains("which is not installed")
        );
        // Actions only the engine runs are not service actions, even when the module has them.
        let lookups = module(&[Capability::Lookup]);
        let t = target(&s, Some(&lookups), &[], ServiceStatus::Active);
        assert_eq!(
            rule(check_runnable(&t, &Action::Lookup).unwrap_err()),
            "action:enum"
        );
        let ended = target(&s, Some(&all), &[], ServiceStatus::Terminated);
        assert!(
            rule(check_runnable(&ended, &Action::Unsuspend).unwrap_err()).starts_with("conflict")
        );
    }

    #[test]
    fn input_is_checked_per_action_and_stray_fields_refused() {
        let s = server();
        let all = module(&Capability::LIFECYCLE);
        let t = target(&s, Some(&all), &[], ServiceStatus::Active);
        let cipher = Cipher::new(&Cipher::generate_key());
        let suspend = params(
            &cipher,
            Utc::now(),
            &t,
            &Action::Suspend,
            &ActionInput::default(),
            NewProduct::None,
        )
        .unwrap();
        assert_eq!(suspend["reason"], "admin");
        let bad = ActionInput {
            reason: Some(" ".into()),
            until: Some(Utc::now() - chrono::Duration::hours(1)),
            password: Some("pw".to_string().into()),
            ..Default::default()
        };
        let e = params(
            &cipher,
            Utc::now(),
            &t,
            &Action::Suspend,
            &bad,
            NewProduct::None,
        )
        .unwrap_err();
        assert_eq!(
            rule(e),
            "reason:length,until:future,password:not_applicable"
        );
        // A new password is sealed in the params, never stored in clear.
        let pw = ActionInput {
            password: Some("correct horse battery".to_string().into()),
            ..Default::default()
        };
        let p = params(
            &cipher,
            Utc::now(),
            &t,
            &Action::ChangePassword,
            &pw,
            NewProduct::None,
        )
        .unwrap();
        assert!(!p["new_password"].to_string().contains("correct horse"));
        assert!(provisio_core::secret::as_sealed(&p["new_password"]).is_some());
        let none = params(
            &cipher,
            Utc::now(),
            &t,
            &Action::ChangePackage,
            &ActionInput::default(),
            NewProduct::None,
        )
        .unwrap_err();
        assert_eq!(rule(none), "product:required");
        let named = ActionInput {
            product: Some(crate::input::RecordRef::Name("gold".into())),
            ..Default::default()
        };
        let missing = params(
            &cipher,
            Utc::now(),
            &t,
            &Action::ChangePackage,
            &named,
            NewProduct::Missing,
        )
        .unwrap_err();
        assert_eq!(rule(missing), "product:exists");
    }
}
