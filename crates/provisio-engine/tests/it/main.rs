//! The engine's own test suite: the action path's rules tested at the engine, without
//! HTTP, over an in-process SQLite store and a recording module (`harness`).

// Tests set times up by the system clock; the lint guards the engine's own code.
#![allow(clippy::disallowed_methods)]

mod actions;
mod clock;
mod harness;
mod orders;
mod outcomes;
mod placement;
mod retention;
mod shutdown;
mod standby;
