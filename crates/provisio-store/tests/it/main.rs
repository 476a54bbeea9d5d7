//! The store suite: every test runs once on SQLite and once on PostgreSQL.

// Tests set times up by the system clock; the lint guards the store's own code.
#![allow(clippy::disallowed_methods)]

mod balance;
mod clock;
mod console;
mod group;
mod harness;
mod hooks;
mod idempotency;
mod jobs;
mod loads;
mod secrets;
mod suite;
mod usage;

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::harness::sqlite().await;
                    crate::$name(db.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::harness::postgres().await;
                    crate::$name(db.store.clone()).await;
                }
            )*
        }
    };
}

use balance::*;
use console::*;
use group::*;
use hooks::*;
use idempotency::*;
use jobs::*;
use loads::*;
use secrets::*;
use suite::*;
use usage::*;

on_both!(
    migrations_are_idempotent,
    clients_roundtrip_filter_and_page,
    servers_names_are_unique,
    products_extend_and_filter,
    services_roundtrip_with_suspension,
    usernames_unique_per_server_among_live_services,
    service_filters_and_counts,
    referenced_records_cannot_be_deleted,
    api_keys_by_hash,
    resellers_hold_clients_and_scope_lists,
    settings_json_roundtrips,
    claims_respect_order_and_capacity,
    allowance_and_total_cap_claims,
    finishing_jobs_free_their_slots,
    standby_jobs_take_no_place_until_handed_one,
    standby_is_not_held_where_a_cap_decides,
    batched_outcomes_write_every_row,
    many_jobs_queue_in_one_call,
    jobs_keep_their_trace_id,
    expired_leases_come_back_for_lookup,
    failed_jobs_retry_or_resolve,
    due_unsuspends_are_found,
    events_filter_page_and_purge,
    old_finished_jobs_are_trimmed_in_batches,
    old_deliveries_and_rule_runs_are_trimmed_in_batches,
    delivery_leases_are_renewed_by_their_holder_only,
    balance_transactions_move_the_balance,
    balance_transactions_replay_by_key,
    balance_crossings_are_announced,
    concurrent_balance_transactions_add_up,
    usage_readings_topups_and_exceeding,
    many_readings_in_one_batch,
    sync_runs_and_audits,
    old_sync_runs_and_audits_are_trimmed,
    secret_keys_record_once_and_rotate,
    sealed_cells_are_found_and_rewritten_only_while_unchanged,
    idempotency_keys_claim_keep_and_expire,
    concurrent_claims_of_one_key_have_one_winner,
    batches_are_stored_all_or_none,
    queue_gauges_and_migrations_are_read,
    server_loads_match_counts_after_every_change,
    concurrent_writes_fail_alone_and_are_read_when_answered,
    orders_are_stored_with_their_announcements,
    concurrent_orders_keep_their_cause_and_fail_alone,
    jobs_are_stored_with_their_own_service,
    console_sessions_expire_and_end,
    service_timelines_are_newest_first_and_bounded,
    product_chains_are_read_up_to_the_root,
);
