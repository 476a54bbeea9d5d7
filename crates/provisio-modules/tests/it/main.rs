//! Built-in modules against real local peers: executables for `script`, an HTTP server for
//! `http`, FreeRADIUS and PostgreSQL for `radius`.

mod http;
mod radius;
mod script;
