//! Built-in modules against real local peers: executables for `script`, an HTTP server for `http`.

mod http;
mod script;
