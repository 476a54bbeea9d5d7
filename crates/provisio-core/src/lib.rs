//! Provisio's domain: records, lifecycle, typed module settings and module declarations.
//!
//! This crate does no I/O: no files, no network, no database, no clock reads
//! outside `chrono::Utc::now` in constructors that take time explicitly elsewhere.

pub mod access;
pub mod action;
pub mod audit;
pub mod client;
pub mod event;
pub mod handler;
pub mod ids;
pub mod job;
pub mod module;
pub mod money;
pub mod page;
pub mod product;
pub mod rule;
pub mod secret;
pub mod server;
pub mod service;
pub mod settings;
pub mod text;
pub mod trace;
pub mod usage;
pub mod webhook;

pub use ids::{
    ClientId, DeliveryId, HandlerId, ProductId, ResellerId, RuleId, ServerId, ServiceId,
};
