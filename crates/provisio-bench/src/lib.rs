//! What the benches share with tests outside this crate: the chaos run, which the CLI's
//! test suite runs small against the real `provisio` binary.

pub mod chaos;
