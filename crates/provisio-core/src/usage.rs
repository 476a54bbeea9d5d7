//! Usage: what a service consumed per metric in the current period against its package
//! limit, once-off top-ups that add quota beyond it, and the arithmetic that applies a new
//! reading (pure, so the store and the tests share one definition).

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ProductId, ServiceId};

/// The current usage of one metric of one service.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UsageState {
    #[schema(value_type = i64)]
    pub service_id: ServiceId,
    pub metric: String,
    /// Start of the period the recurring amount belongs to.
    pub period_start: DateTime<Utc>,
    /// Used in this period (recurring and top-up consumption together).
    pub used: f64,
    /// The package limit for the period; `None` when the metric has no limit.
    pub limit: Option<f64>,
    pub unit: Option<String>,
    /// How much of the top-ups this period's use has drawn so far.
    pub topup_used: f64,
    /// The period in which `service.usage_exceeded` was last announced.
    pub exceeded_period: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A once-off top-up: quota that is consumed only after the recurring quota and does not
/// reset with the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Topup {
    pub id: i64,
    #[schema(value_type = i64)]
    pub service_id: ServiceId,
    pub metric: String,
    pub amount: f64,
    /// How much of it has been consumed (over all periods).
    pub consumed: f64,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTopup {
    pub metric: String,
    pub amount: f64,
    pub note: Option<String>,
    pub idempotency_key: Option<String>,
}

/// One stored reading (history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReading {
    pub id: i64,
    #[schema(value_type = i64)]
    pub service_id: ServiceId,
    pub metric: String,
    pub period_start: DateTime<Utc>,
    pub used: f64,
    pub limit: Option<f64>,
    pub at: DateTime<Utc>,
}

/// A reading the engine hands the store: the limit is already resolved (package limit
/// from the product, else what the module reported).
#[derive(Debug, Clone, PartialEq)]
pub struct NewReading {
    pub service_id: ServiceId,
    pub metric: String,
    pub used: f64,
    pub limit: Option<f64>,
    pub unit: Option<String>,
    pub period_start: DateTime<Utc>,
}

/// What applying a reading does.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub state: UsageState,
    /// Top-up quota to consume (positive) or give back (negative, when the remote reports
    /// less than before within the period).
    pub topup_delta: f64,
    /// Something a reader would see differs from before (a new reading to keep).
    pub changed: bool,
    /// The used amount crossed the limit plus top-ups, for the first time this period.
    pub exceeded_now: bool,
}

/// Applies `r` to the previous state, given the top-up quota not yet consumed by earlier
/// periods or readings (`topup_left`).
pub fn apply(
    prev: Option<&UsageState>,
    topup_left: f64,
    r: &NewReading,
    now: DateTime<Utc>,
) -> Applied {
    let same_period = prev.is_some_and(|p| p.period_start == r.period_start);
    let charged_before = match prev {
        Some(p) if same_period => p.topup_used,
        _ => 0.0,
    };
    let used = if r.used.is_finite() {
        r.used.max(0.0)
    } else {
        0.0
    };
    // Everything this period may draw from top-ups: what is left plus what it already drew.
    let available = (topup_left.max(0.0)) + charged_before;
    let overage = r.limit.map(|l| (used - l).max(0.0)).unwrap_or(0.0);
    let charged_now = overage.min(available);
    let exceeded = r.limit.is_some_and(|l| used > l + available);
    let exceeded_now = exceeded && prev.and_then(|p| p.exceeded_period) != Some(r.period_start);
    let exceeded_period = if exceeded_now {
        Some(r.period_start)
    } else {
        prev.and_then(|p| p.exceeded_period)
    };
    let changed = match prev {
        None => true,
        Some(p) => !same_period || p.used != used || p.limit != r.limit || p.unit != r.unit,
    };
    Applied {
        state: UsageState {
            service_id: r.service_id,
            metric: r.metric.clone(),
            period_start: r.period_start,
            used,
            limit: r.limit,
            unit: r.unit.clone(),
            topup_used: charged_now,
            exceeded_period,
            updated_at: now,
        },
        topup_delta: charged_now - charged_before,
        changed,
        exceeded_now,
    }
}

/// Spreads a top-up consumption over top-ups: a positive delta consumes the oldest first,
/// a negative one gives back to the newest consumption first. Returns the new `consumed`
/// of each top-up whose value changed, by index.
pub fn spread(topups: &[(f64, f64)], delta: f64) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    let mut rest = delta;
    if rest > 0.0 {
        for (i, (amount, consumed)) in topups.iter().enumerate() {
            if rest <= 0.0 {
                break;
            }
            let free = (amount - consumed).max(0.0);
            if free > 0.0 {
                let take = free.min(rest);
                rest -= take;
                out.push((i, consumed + take));
            }
        }
    } else if rest < 0.0 {
        for (i, (_, consumed)) in topups.iter().enumerate().rev() {
            if rest >= 0.0 {
                break;
            }
            if *consumed > 0.0 {
                let give = consumed.min(-rest);
                rest += give;
                out.push((i, consumed - give));
            }
        }
    }
    out
}

/// How long a usage period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Calendar months, UTC.
    #[default]
    Monthly,
    /// Calendar days, UTC.
    Daily,
}

impl Period {
    /// The start of the period `at` falls in.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let (y, m, d) = match self {
            Period::Monthly => (at.year(), at.month(), 1),
            Period::Daily => (at.year(), at.month(), at.day()),
        };
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .unwrap_or(at)
    }
}

/// What a product does when one of its services exceeds a metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum OnExceed {
    /// Suspends the service with reason `usage`.
    Suspend,
    /// Moves the service to another product (e.g. a throttled package), by name.
    ChangePackage { product: String },
}

/// A product's usage policy: where its limits come from and what exceeding does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsagePolicy {
    /// Metric → the product setting holding its limit (default `<metric>_limit`).
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, String>,
    /// Metrics whose exceeding triggers `on_exceed` (empty: every metric).
    #[serde(default)]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub on_exceed: Option<OnExceed>,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub product_id: ProductId,
    pub policy: UsagePolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(used: f64, limit: Option<f64>, period: DateTime<Utc>) -> NewReading {
        NewReading {
            service_id: ServiceId(1),
            metric: "data".into(),
            used,
            limit,
            unit: None,
            period_start: period,
        }
    }

    #[test]
    fn topups_draw_only_beyond_the_recurring_quota_and_survive_the_period() {
        let p1 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let p2 = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let now = p1;
        let a = apply(None, 50.0, &reading(80.0, Some(100.0), p1), now);
        assert_eq!(a.topup_delta, 0.0);
        assert!(!a.exceeded_now);
        let b = apply(Some(&a.state), 50.0, &reading(130.0, Some(100.0), p1), now);
        assert_eq!(b.topup_delta, 30.0);
        assert!(!b.exceeded_now);
        // 20 left; 160 crosses 100 + 50.
        let c = apply(Some(&b.state), 20.0, &reading(160.0, Some(100.0), p1), now);
        assert_eq!(c.topup_delta, 20.0);
        assert!(c.exceeded_now);
        let d = apply(Some(&c.state), 0.0, &reading(170.0, Some(100.0), p1), now);
        assert!(!d.exceeded_now, "once per period");
        // New period: the recurring quota resets, consumed top-up stays consumed.
        let e = apply(Some(&d.state), 0.0, &reading(10.0, Some(100.0), p2), now);
        assert_eq!(e.topup_delta, 0.0);
        assert_eq!(e.state.topup_used, 0.0);
        let f = apply(Some(&e.state), 0.0, &reading(101.0, Some(100.0), p2), now);
        assert!(f.exceeded_now, "again in the next period");
    }

    #[test]
    fn spread_takes_oldest_first_and_gives_back_newest_first() {
        let t = [(10.0, 10.0), (10.0, 2.0), (10.0, 0.0)];
        assert_eq!(spread(&t, 12.0), vec![(1, 10.0), (2, 4.0)]);
        assert_eq!(spread(&t, -5.0), vec![(1, 0.0), (0, 7.0)]);
    }
}
