//! Jobs: asking for actions (checked against the lifecycle and stored with the record that
//! caused them), the worker that runs them through their module under leases, its limits
//! (concurrency, rate, circuit breaker), and the module queue's operations.

pub(crate) mod call;
pub mod limits;
pub(crate) mod plan;
pub(crate) mod request;
pub mod worker;
