//! Handlers as records: parsing and checking what callers send, signing secrets (shown once,
//! rotated with an overlap), and the delivery log with manual redelivery.

use std::time::Duration;

use provisio_core::event::{EventPattern, CATALOGUE};
use provisio_core::handler::{
    Delivery, DeliveryAttempt, EmailTemplate, Handler, HandlerKind, NewHandler, OnError, Phase,
};
use provisio_core::page::{Page, PageRequest};
use provisio_core::text::Handle;
use provisio_core::webhook;
use provisio_core::DeliveryId;
use provisio_store::{DeliveryFilter, HandlerFilter};
use secrecy::{ExposeSecret, SecretString};

use crate::error::Problems;
use crate::input::RecordRef;
use crate::{Engine, EngineError, Result};

/// Bounds of a handler's timeout: long enough for a slow webhook receiver, short enough that
/// a gate never holds an API request for long.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;
const DEFAULT_GATE_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_NOTIFY_TIMEOUT_MS: u64 = 15_000;
/// Bounds of `disable_after`: from a second (tests, drills) to 30 days.
pub const DISABLE_AFTER_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=30 * 86_400;
const MAX_TARGET_LEN: usize = 2_000;
const MAX_TEMPLATE_LEN: usize = 64 * 1024;

// The bodies are the API's wire types, defined once in `provisio-api`.
pub use provisio_api::requests::{HandlerCreate, HandlerPatch};

/// A stored handler and, right after creation or rotation, its secret in clear.
#[derive(Debug)]
pub struct HandlerWithSecret {
    pub handler: Handler,
    pub secret: Option<SecretString>,
}

/// A delivery with its attempt log.
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    pub delivery: Delivery,
    pub attempts: Vec<DeliveryAttempt>,
}

fn parse_secret(p: &mut Problems, s: &SecretString) -> Option<webhook::Secret> {
    match webhook::Secret::parse(s.expose_secret()) {
        Ok(secret) => Some(secret),
        Err(e) => {
            // The message names the rule, never the value.
            p.push("secret", "format", e);
            None
        }
    }
}

impl Engine {
    fn check_events(&self, p: &mut Problems, phase: Phase, events: &[String]) -> Vec<EventPattern> {
        if events.is_empty() {
            p.push(
                "events",
                "required",
                "must list at least one event type or pattern",
            );
        }
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let field = format!("events[{i}]");
            let Some(pattern) = p.take(&field, EventPattern::parse(e)) else {
                continue;
            };
            let hears = |t: &&str| {
                provisio_core::event::EventType::parse(t).is_ok_and(|t| pattern.matches(&t))
            };
            let gate_event = |t: &&&str| t.ends_with(".before");
            let matched = match phase {
                Phase::Gate => CATALOGUE.iter().filter(gate_event).any(&hears),
                Phase::Notify => CATALOGUE.iter().any(&hears),
            };
            if !matched {
                p.push(
                    &field,
                    "catalogue",
                    match phase {
                        Phase::Gate => format!(
                            "'{e}' matches no event a gate can stop (the `.before` events, e.g. service.suspend.before)"
                        ),
                        Phase::Notify => format!("'{e}' matches no event Provisio emits"),
                    },
                );
            }
            out.push(pattern);
        }
        out
    }

    fn check_target(
        &self,
        p: &mut Problems,
        kind: HandlerKind,
        url: Option<&str>,
        script: Option<&str>,
        email: Option<&EmailTemplate>,
    ) -> String {
        let stray = |p: &mut Problems, field: &str, present: bool| {
            if present {
                p.push(
                    field,
                    "not_applicable",
                    format!("does not apply to {} handlers", kind.as_str()),
                );
            }
        };
        match kind {
            HandlerKind::Http => {
                stray(p, "script", script.is_some());
                stray(p, "email", email.is_some());
                match url {
                    None => p.push("url", "required", "is required for http handlers"),
                    Some(u) if u.len() > MAX_TARGET_LEN => p.push(
                        "url",
                        "max_length",
                        format!("must be at most {MAX_TARGET_LEN} characters"),
                    ),
                    Some(u) => match reqwest::Url::parse(u) {
                        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                            if !parsed.username().is_empty() || parsed.password().is_some() {
                                p.push(
                                    "url",
                                    "credentials",
                                    "must not carry credentials; receivers verify the signature",
                                );
                            }
                            return u.to_string();
                        }
                        Ok(_) => p.push("url", "scheme", "must be an http or https URL"),
                        Err(e) => p.push("url", "url", format!("is not a URL: {e}")),
                    },
                }
            }
            HandlerKind::Script => {
                stray(p, "url", url.is_some());
                stray(p, "email", email.is_some());
                match script {
                    None => p.push("script", "required", "is required for script handlers"),
                    Some(s) => {
                        match provisio_modules::script::exec::check_confined(
                            &self.options.hooks.handlers_dir,
                            s,
                        ) {
                            Ok(()) => return s.to_string(),
                            Err(m) => p.push("script", "path", m),
                        }
                    }
                }
            }
            HandlerKind::Email => {
                stray(p, "url", url.is_some());
                stray(p, "script", script.is_some());
                if self.options.hooks.smtp.is_none() {
                    p.push(
                        "kind",
                        "smtp",
                        "email handlers need an [smtp] section in the config",
                    );
                }
                match email {
                    None => p.push("email", "required", "is required for email handlers"),
                    Some(t) => {
                        for (field, text) in [
                            ("email.to", &t.to),
                            ("email.subject", &t.subject),
                            ("email.body", &t.body),
                        ] {
                            if text.trim().is_empty() {
                                p.push(field, "required", "must not be empty");
                            } else if text.chars().count() > MAX_TEMPLATE_LEN {
                                p.push(
                                    field,
                                    "max_length",
                                    format!("must be at most {MAX_TEMPLATE_LEN} characters"),
                                );
                            } else if let Err(e) = crate::hooks::deliver::check_template(text) {
                                p.push(field, "template", e);
                            }
                        }
                    }
                }
            }
        }
        String::new()
    }

    fn check_timing(
        &self,
        p: &mut Problems,
        phase: Phase,
        kind: HandlerKind,
        on_error: Option<OnError>,
        disable_after_secs: Option<u64>,
    ) {
        if phase == Phase::Notify && on_error.is_some() {
            p.push("on_error", "not_applicable", "applies only to gates");
        }
        if phase == Phase::Gate && disable_after_secs.is_some() {
            p.push(
                "disable_after_secs",
                "not_applicable",
                "applies only to notify handlers",
            );
        }
        if phase == Phase::Gate && kind == HandlerKind::Email {
            p.push("phase", "email", "email handlers can only notify");
        }
        if let Some(d) = disable_after_secs {
            if !DISABLE_AFTER_SECS_RANGE.contains(&d) {
                p.push(
                    "disable_after_secs",
                    "range",
                    format!(
                        "must be between {} and {}",
                        DISABLE_AFTER_SECS_RANGE.start(),
                        DISABLE_AFTER_SECS_RANGE.end()
                    ),
                );
            }
        }
    }

    pub async fn create_handler(&self, input: HandlerCreate) -> Result<HandlerWithSecret> {
        let mut p = Problems::default();
        let name = p.take("name", Handle::parse(&input.name));
        let events = self.check_events(&mut p, input.phase, &input.events);
        let target = self.check_target(
            &mut p,
            input.kind,
            input.url.as_deref(),
            input.script.as_deref(),
            input.email.as_ref(),
        );
        self.check_timing(
            &mut p,
            input.phase,
            input.kind,
            input.on_error,
            input.disable_after_secs,
        );
        let timeout_ms = input.timeout_ms.unwrap_or(match input.phase {
            Phase::Gate => DEFAULT_GATE_TIMEOUT_MS,
            Phase::Notify => DEFAULT_NOTIFY_TIMEOUT_MS,
        });
        check_timeout(&mut p, timeout_ms);
        let secret = match (&input.secret, input.kind) {
            (Some(_), k) if k != HandlerKind::Http => {
                p.push("secret", "not_applicable", "applies only to http handlers");
                None
            }
            (Some(s), _) => parse_secret(&mut p, s.as_secret()),
            (None, HandlerKind::Http) => Some(webhook::Secret::generate()),
            (None, _) => None,
        };
        p.finish()?;
        let shown = secret.as_ref().map(webhook::Secret::encode);
        let new = NewHandler {
            name: name.expect("checked"),
            kind: input.kind,
            target,
            status: input.status.unwrap_or_default(),
            phase: input.phase,
            events,
            timeout: Duration::from_millis(timeout_ms),
            order: input.order.unwrap_or(0),
            on_error: input.on_error.unwrap_or_default(),
            secret: shown.as_ref().map(|s| self.cipher.seal_str(s)),
            email: input.email,
            disable_after: Duration::from_secs(
                input
                    .disable_after_secs
                    .unwrap_or(self.options.hooks.disable_after.as_secs()),
            ),
        };
        let handler = self.store.insert_handler(&new).await?;
        Ok(HandlerWithSecret {
            handler,
            // Only a generated secret is shown: one the caller chose, they already know.
            secret: if input.secret.is_some() { None } else { shown },
        })
    }

    pub async fn find_handler(&self, r: &RecordRef) -> Result<Handler> {
        let found = match r {
            RecordRef::Id(i) => self.store.get_handler(provisio_core::HandlerId(*i)).await?,
            RecordRef::Name(n) => self.store.get_handler_by_name(n).await?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            what: "handler",
            key: r.to_string(),
        })
    }

    pub async fn list_handlers(&self) -> Result<Vec<Handler>> {
        Ok(self.store.list_handlers(&HandlerFilter::default()).await?)
    }

    pub async fn update_handler(&self, r: &RecordRef, patch: HandlerPatch) -> Result<Handler> {
        let h = self.find_handler(r).await?;
        let mut p = Problems::default();
        let name = match &patch.name {
            Some(n) => p.take("name", Handle::parse(n)),
            None => Some(h.name.clone()),
        };
        let events = match &patch.events {
            Some(e) => self.check_events(&mut p, h.phase, e),
            None => h.events.clone(),
        };
        let (url, script) = match h.kind {
            HandlerKind::Http => (
                patch.url.clone().or(Some(h.target.clone())),
                patch.script.clone(),
            ),
            HandlerKind::Script => (
                patch.url.clone(),
                patch.script.clone().or(Some(h.target.clone())),
            ),
            HandlerKind::Email => (patch.url.clone(), patch.script.clone()),
        };
        let email = patch.email.clone().or(h.email.clone());
        let target = self.check_target(
            &mut p,
            h.kind,
            url.as_deref(),
            script.as_deref(),
            email.as_ref(),
        );
        self.check_timing(
            &mut p,
            h.phase,
            h.kind,
            patch.on_error,
            patch.disable_after_secs,
        );
        let timeout_ms = patch.timeout_ms.unwrap_or(h.timeout.as_millis() as u64);
        check_timeout(&mut p, timeout_ms);
        p.finish()?;
        let new = NewHandler {
            name: name.expect("checked"),
            kind: h.kind,
            target,
            status: patch.status.unwrap_or(h.status),
            phase: h.phase,
            events,
            timeout: Duration::from_millis(timeout_ms),
            order: patch.order.unwrap_or(h.order),
            on_error: patch.on_error.unwrap_or(h.on_error),
            secret: None,
            email,
            disable_after: patch
                .disable_after_secs
                .map(Duration::from_secs)
                .unwrap_or(h.disable_after),
        };
        Ok(self.store.update_handler(h.id, &new).await?)
    }

    pub async fn delete_handler(&self, r: &RecordRef) -> Result<()> {
        let h = self.find_handler(r).await?;
        self.store.delete_handler(h.id).await?;
        Ok(())
    }

    /// A new signing secret, shown once; deliveries carry a signature with the old one too
    /// until the configured overlap has passed, so receivers can switch without losing any.
    pub async fn rotate_handler_secret(&self, r: &RecordRef) -> Result<HandlerWithSecret> {
        let h = self.find_handler(r).await?;
        if h.kind != HandlerKind::Http {
            return Err(EngineError::Conflict {
                field: Some("kind".into()),
                message: format!(
                    "handler '{}' is a {} handler; only http handlers sign",
                    h.name,
                    h.kind.as_str()
                ),
            });
        }
        let secret = webhook::Secret::generate().encode();
        let overlap = chrono::Duration::from_std(self.options.hooks.rotation_overlap)
            .unwrap_or(chrono::Duration::hours(24));
        let handler = self
            .store
            .rotate_handler_secret(h.id, &self.cipher.seal_str(&secret), self.now() + overlap)
            .await?;
        Ok(HandlerWithSecret {
            handler,
            secret: Some(secret),
        })
    }

    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page: PageRequest,
    ) -> Result<Page<Delivery>> {
        Ok(self.store.list_deliveries(filter, page).await?)
    }

    pub async fn get_delivery(&self, id: DeliveryId) -> Result<DeliveryDetail> {
        let delivery = self
            .store
            .get_delivery(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "delivery",
                key: id.to_string(),
            })?;
        let attempts = self.store.delivery_attempts(id).await?;
        Ok(DeliveryDetail { delivery, attempts })
    }

    /// Sends a finished delivery again (its log keeps the earlier attempts).
    pub async fn redeliver(&self, id: DeliveryId) -> Result<Delivery> {
        let current = self.get_delivery(id).await?.delivery;
        match self.store.redeliver(id, self.now()).await? {
            Some(d) => Ok(d),
            None => Err(EngineError::Conflict {
                field: None,
                message: format!(
                    "delivery {id} is {}; only succeeded or failed deliveries can be sent again",
                    current.state.as_str()
                ),
            }),
        }
    }
}

fn check_timeout(p: &mut Problems, ms: u64) {
    if !TIMEOUT_MS_RANGE.contains(&ms) {
        p.push(
            "timeout_ms",
            "range",
            format!(
                "must be between {} and {}",
                TIMEOUT_MS_RANGE.start(),
                TIMEOUT_MS_RANGE.end()
            ),
        );
    }
}
