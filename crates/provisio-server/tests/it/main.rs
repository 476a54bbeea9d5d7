//! The REST API, driven over HTTP against a server started in-process on 127.0.0.1:0.
//! Every test runs on SQLite and on PostgreSQL (`on_both!`), except the few that are about
//! one database by nature, which say so where they are.

/// For each `async fn name(db: Db)` of the module it is invoked in, a `sqlite::name` and a
/// `postgres::name` test; the test's app (`spawn_app_with(db, …)`) makes a fresh database
/// of its own, on PostgreSQL a new one in the cluster `PROVISIO_TEST_PG_URL` names. Each
/// runs bounded in time ([`helpers::run_bounded`]), so a hang fails that test, with what the
/// database was doing, instead of holding the whole run.
/// Defined before the modules so that every one of them can invoke it.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    $crate::helpers::run_bounded(
                        concat!(module_path!(), "::", stringify!($name)),
                        $crate::helpers::Db::Sqlite,
                        super::$name,
                    );
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    $crate::helpers::run_bounded(
                        concat!(module_path!(), "::", stringify!($name)),
                        $crate::helpers::Db::Postgres,
                        super::$name,
                    );
                }
            )*
        }
    };
}

mod groups;
mod helpers;
mod hooks;
mod module_audits;

mod access;
mod actions;
mod audit;
mod auth;
mod bad_input;
mod balance;
mod bounds;
mod clients;
mod console;
mod contract;
mod declared;
mod delivery_leases;
mod events;
mod faults;
mod metrics;
mod multi_engine;
mod openapi;
mod products;
mod retries;
mod secret_keys;
mod secrets;
mod servers;
mod services;
mod traces;
mod usage;
mod whmcs;
mod whmcs_bridge;
