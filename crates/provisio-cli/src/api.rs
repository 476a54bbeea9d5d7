//! The CLI's connection to Provisio's REST API: the typed client of `provisio-api` (API
//! key, `Idempotency-Key` on every POST, problem+json decoded into one error line) with the
//! CLI's user agent and paging defaults.

use std::time::Duration;

pub use provisio_api::client::{segment, Listing, MAX_PAGE};
pub use provisio_api::Client as Api;
use provisio_api::ClientOptions;

pub const DEFAULT_PAGE: u32 = 50;

/// Checks the base URL now, so a typo fails before any request with a message naming it.
pub fn connect(base_url: &str, api_key: Option<&str>) -> anyhow::Result<Api> {
    let options = ClientOptions {
        timeout: Duration::from_secs(120),
        connect_timeout: Duration::from_secs(10),
        user_agent: concat!("provisio-cli/", env!("CARGO_PKG_VERSION")).to_string(),
        ..Default::default()
    };
    Ok(Api::with_options(base_url, api_key, options)?)
}
