//! The engine's own test suite: the action path's rules tested at the engine, without
//! HTTP, over an in-process SQLite store and a recording module (`harness`).

mod actions;
mod harness;
mod retention;
mod shutdown;
