//! Integration tests of provisio-core, one module per scenario, in a single test binary.

mod settings_seed002;
