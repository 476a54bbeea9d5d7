//! The schedule: scheduled usage syncs and audits, each occurrence run by one process.

use super::*;

/// Runs scheduled syncs and audits: at each cron occurrence, one process (the first to
/// store the occurrence's slot) runs it; the others see the slot taken and skip.
pub(crate) async fn schedule_loop(engine: Arc<Engine>, mut stop: Shutdown) {
    let usage = engine
        .options
        .usage
        .schedule
        .as_deref()
        .and_then(parse_cron);
    let audit = engine
        .options
        .audit
        .schedule
        .as_deref()
        .and_then(parse_cron);
    if usage.is_none() && audit.is_none() {
        return;
    }
    let mut next_usage = usage.as_ref().and_then(|c| next_after(c, engine.now()));
    let mut next_audit = audit.as_ref().and_then(|c| next_after(c, engine.now()));
    let mut last_purge = Instant::now();
    // It waits at most a minute between turns.
    let pulse = engine
        .heartbeats()
        .register("schedule", Duration::from_secs(60));
    loop {
        pulse.beat();
        let now = engine.now();
        let due = [next_usage, next_audit].into_iter().flatten().min();
        let wait = due
            .map(|d| (d - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.stopped() => return,
        }
        let now = engine.now();
        if let (Some(at), Some(c)) = (next_usage, usage.as_ref()) {
            if at <= now {
                next_usage = next_after(c, now);
                let slot = format!("usage:{}", at.to_rfc3339());
                match engine.usage_servers(None).await {
                    Ok(servers) => match engine.begin_sync(&servers, Some(&slot)).await {
                        Ok(Some(run)) => {
                            let e = engine.clone();
                            tokio::spawn(provisio_store::inherit(async move {
                                e.run_usage_sync(run.id, servers).await
                            }));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "starting the scheduled usage sync failed")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "listing servers for the usage sync failed")
                    }
                }
            }
        }
        if let (Some(at), Some(c)) = (next_audit, audit.as_ref()) {
            if at <= now {
                next_audit = next_after(c, now);
                let slot = format!("audit:{}", at.to_rfc3339());
                let e = engine.clone();
                tokio::spawn(provisio_store::inherit(async move {
                    e.scheduled_audits(&slot).await
                }));
            }
        }
        if last_purge.elapsed() > Duration::from_secs(3600) {
            last_purge = Instant::now();
            let before = engine.now()
                - chrono::Duration::from_std(engine.options.usage.history).unwrap_or_default();
            if let Err(e) = engine.store.purge_usage_readings(before).await {
                tracing::warn!(error = %e, "trimming usage readings failed");
            }
        }
    }
}

/// A cron expression (five fields, or six with seconds), or `None` (logged) when invalid.
pub fn parse_cron(s: &str) -> Option<croner::Cron> {
    if s.trim().is_empty() {
        return None;
    }
    match croner::Cron::new(s).with_seconds_optional().parse() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(schedule = s, error = %e, "invalid cron expression; schedule off");
            None
        }
    }
}

/// Checks a cron expression, for configuration loading.
pub fn check_cron(s: &str) -> std::result::Result<(), String> {
    croner::Cron::new(s)
        .with_seconds_optional()
        .parse()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn next_after(c: &croner::Cron, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    c.find_next_occurrence(&t, false).ok()
}
