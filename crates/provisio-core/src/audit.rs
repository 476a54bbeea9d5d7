//! Audit: comparing a server's remote accounts with the local services on it, the kinds of
//! drift that comparison finds, and the comparison itself (pure and linear, so a million
//! accounts compare in well under a second).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{ServerId, ServiceId};
use crate::module::RemoteAccount;
use crate::service::ServiceStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// A remote account with no local service.
    OrphanRemote,
    /// A local active or suspended service with no remote account.
    MissingRemote,
    /// Both exist; the remote's status differs from the local one.
    StatusMismatch,
    /// Both exist; the remote's package differs from the local product's.
    PackageMismatch,
}

impl DriftKind {
    pub const ALL: [DriftKind; 4] = [
        Self::OrphanRemote,
        Self::MissingRemote,
        Self::StatusMismatch,
        Self::PackageMismatch,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrphanRemote => "orphan_remote",
            Self::MissingRemote => "missing_remote",
            Self::StatusMismatch => "status_mismatch",
            Self::PackageMismatch => "package_mismatch",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which side a fix changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FixMode {
    /// Make the local records follow the remote: import orphans, mark missing services
    /// `failed`, adopt the remote's status.
    Local,
    /// Make the remote follow the local records: run the actions that restore local status.
    Remote,
}

impl FixMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditState {
    Running,
    /// Compared; fixes (if asked for) applied or planned.
    Done,
    /// The listing failed before it could be compared.
    Failed,
}

impl AuditState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Done, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One local service as the audit sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAccount {
    pub service_id: ServiceId,
    pub username: String,
    pub status: ServiceStatus,
    /// The package the product says the remote should have (its `package` setting, else
    /// its name).
    pub package: Option<String>,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    pub kind: DriftKind,
    pub username: String,
    #[serde(default)]
    pub service_id: Option<i64>,
    #[serde(default)]
    pub local_status: Option<String>,
    #[serde(default)]
    pub remote_status: Option<String>,
    #[serde(default)]
    pub local_package: Option<String>,
    #[serde(default)]
    pub remote_package: Option<String>,
    /// What a fix does (or, in a dry run, would do) about it: `import as service 12`,
    /// `suspend (job 40)`, `none: …`.
    #[serde(default)]
    pub fix: Option<String>,
}

/// A stored audit report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Audit {
    pub id: i64,
    #[schema(value_type = i64)]
    pub server_id: ServerId,
    pub state: AuditState,
    pub fix: Option<FixMode>,
    pub dry_run: bool,
    pub force: bool,
    pub remote_accounts: i64,
    pub local_services: i64,
    /// Per kind, how many findings.
    pub counts: std::collections::BTreeMap<String, i64>,
    /// Why a fix did not run (the guard), or why the audit failed.
    pub note: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The local status a remote status word stands for, when it names one.
pub fn remote_status(s: &str) -> Option<ServiceStatus> {
    match s.to_ascii_lowercase().as_str() {
        "active" | "enabled" | "true" => Some(ServiceStatus::Active),
        "suspended" | "disabled" | "false" | "inactive" => Some(ServiceStatus::Suspended),
        _ => None,
    }
}

/// Compares the remote listing with the local services of one server. Services that are
/// terminated locally are not passed in; pending and failed ones count as known (no orphan)
/// but are not expected remotely.
pub fn compare(remote: &[RemoteAccount], local: &[LocalAccount]) -> Vec<Finding> {
    let by_name: HashMap<&str, &LocalAccount> =
        local.iter().map(|l| (l.username.as_str(), l)).collect();
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(remote.len());
    let mut out = Vec::new();
    for r in remote {
        seen.insert(r.username.as_str(), ());
        let Some(l) = by_name.get(r.username.as_str()) else {
            out.push(Finding {
                kind: DriftKind::OrphanRemote,
                username: r.username.clone(),
                service_id: None,
                local_status: None,
                remote_status: r.status.clone(),
                local_package: None,
                remote_package: r.package.clone(),
                fix: None,
            });
            continue;
        };
        if !matches!(l.status, ServiceStatus::Active | ServiceStatus::Suspended) {
            continue;
        }
        let base = |kind| Finding {
            kind,
            username: l.username.clone(),
            service_id: Some(l.service_id.0),
            local_status: Some(l.status.as_str().to_string()),
            remote_status: r.status.clone(),
            local_package: l.package.clone(),
            remote_package: r.package.clone(),
            fix: None,
        };
        if let Some(rs) = r.status.as_deref() {
            if remote_status(rs) != Some(l.status) {
                out.push(base(DriftKind::StatusMismatch));
            }
        }
        if let (Some(rp), Some(lp)) = (r.package.as_deref(), l.package.as_deref()) {
            if rp != lp {
                out.push(base(DriftKind::PackageMismatch));
            }
        }
    }
    for l in local {
        if matches!(l.status, ServiceStatus::Active | ServiceStatus::Suspended)
            && !seen.contains_key(l.username.as_str())
        {
            out.push(Finding {
                kind: DriftKind::MissingRemote,
                username: l.username.clone(),
                service_id: Some(l.service_id.0),
                local_status: Some(l.status.as_str().to_string()),
                remote_status: None,
                local_package: l.package.clone(),
                remote_package: None,
                fix: None,
            });
        }
    }
    out
}

/// RFC 4180 CSV: fields with a comma, quote or line break are quoted, quotes doubled. A
/// field starting with `=`, `+`, `-` or `@` gets a leading apostrophe so a spreadsheet does
/// not run a remote-supplied username as a formula.
pub fn findings_csv(findings: &[Finding]) -> String {
    fn field(s: &str) -> String {
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let mut out = String::from(
        "kind,username,service_id,local_status,remote_status,local_package,remote_package,fix\r\n",
    );
    for f in findings {
        let cols = [
            f.kind.as_str().to_string(),
            f.username.clone(),
            f.service_id.map(|i| i.to_string()).unwrap_or_default(),
            f.local_status.clone().unwrap_or_default(),
            f.remote_status.clone().unwrap_or_default(),
            f.local_package.clone().unwrap_or_default(),
            f.remote_package.clone().unwrap_or_default(),
            f.fix.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = cols.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(u: &str, s: &str, p: &str) -> RemoteAccount {
        RemoteAccount {
            username: u.into(),
            status: Some(s.into()),
            package: Some(p.into()),
        }
    }
    fn local(id: i64, u: &str, s: ServiceStatus, p: &str) -> LocalAccount {
        LocalAccount {
            service_id: ServiceId(id),
            username: u.into(),
            status: s,
            package: Some(p.into()),
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let f = Finding {
            kind: DriftKind::OrphanRemote,
            username: "=cmd".into(),
            service_id: None,
            local_status: None,
            remote_status: Some("a,b".into()),
            local_package: None,
            remote_package: Some("say \"hi\"".into()),
            fix: None,
        };
        let csv = findings_csv(&[f]);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "orphan_remote,'=cmd,,,\"a,b\",,\"say \"\"hi\"\"\",",
        );
    }

    #[test]
    fn finds_each_kind() {
        let remote = [
            acct("a", "active", "gold"),
            acct("b", "suspended", "gold"),
            acct("c", "active", "silver"),
            acct("x", "active", "gold"),
            acct("p", "active", "gold"),
        ];
        let locals = [
            local(1, "a", ServiceStatus::Active, "gold"),
            local(2, "b", ServiceStatus::Active, "gold"),
            local(3, "c", ServiceStatus::Active, "gold"),
            local(4, "m", ServiceStatus::Suspended, "gold"),
            local(5, "p", ServiceStatus::Pending, "gold"),
            local(6, "f", ServiceStatus::Failed, "gold"),
        ];
        let f = compare(&remote, &locals);
        let kinds: Vec<(DriftKind, &str)> =
            f.iter().map(|f| (f.kind, f.username.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (DriftKind::StatusMismatch, "b"),
                (DriftKind::PackageMismatch, "c"),
                (DriftKind::OrphanRemote, "x"),
                (DriftKind::MissingRemote, "m"),
            ]
        );
    }
}
