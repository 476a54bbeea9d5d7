//! The wire types of Provisio's REST API, the one definition the server answers with and
//! the typed client decodes (`views`: answers; `problem`: errors; `requests`: bodies the
//! server's routes define), and with the `client` feature a typed client over them.

pub mod problem;
pub mod requests;
pub mod views;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "client")]
pub use client::{ApiError, Client, ClientOptions};
pub use problem::{FieldProblem, Problem};
