//! Built-in modules against real local peers: executables for `script`, an HTTP server for
//! `http`, FreeRADIUS and PostgreSQL for `radius`, throwaway PostgreSQL clusters for
//! `postgres`, the scim2-server for `scim`.

mod http;
mod postgres;
mod radius;
mod scim;
mod script;
