//! Integration tests of provisio-core, one module per scenario, in a single test binary.

mod event;
mod settings_seed002;
mod webhook;
