//! The typed client against a real server: the router on a loopback port over a fresh
//! SQLite database, with the built-in modules.

mod app;
mod client;
mod retry_after;
mod roundtrip;
mod typed;
