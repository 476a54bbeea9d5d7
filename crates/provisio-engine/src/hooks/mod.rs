//! Hooks: handlers as records, gates asked before actions, notify deliveries after events
//! (signed webhooks, scripts, email), and automation rules acting on events.

pub(crate) mod deliver;
pub(crate) mod gates;
pub mod handlers;
pub mod mailer;
pub mod rules;
