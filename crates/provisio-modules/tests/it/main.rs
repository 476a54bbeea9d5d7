//! Built-in modules against real local peers: executables for `script`, an HTTP server for
//! `http`, FreeRADIUS and PostgreSQL for `radius`, throwaway PostgreSQL clusters for
//! `postgres`, the scim2-server for `scim`.

mod http;
mod postgres;
mod radius;
mod scim;
mod script;
mod whmcs;

/// The options the suite's modules run with. The peers live on loopback, which the
/// outbound guard refuses by default, so 127.0.0.1 is allowed explicitly (as an operator
/// would for a local remote); the radius SQLite databases live in temporary directories.
pub fn local_options() -> provisio_modules::ModuleOptions {
    provisio_modules::ModuleOptions {
        outbound: provisio_modules::outbound::OutboundPolicy::parse(&["127.0.0.1/32".into()])
            .expect("a valid network"),
        radius_sqlite_dir: Some(std::env::temp_dir()),
        ..Default::default()
    }
}
