//! The REST API, driven over HTTP against a server started in-process on 127.0.0.1:0.

mod groups;
mod helpers;
mod hooks;
mod module_audits;

mod actions;
mod audit;
mod auth;
mod bad_input;
mod balance;
mod clients;
mod declared;
mod events;
mod faults;
mod multi_engine;
mod openapi;
mod products;
mod secrets;
mod servers;
mod services;
mod usage;
