//! The clean-up policy: terminating services suspended longer than a limit, through the
//! group path so that each member is reported.

use super::*;

impl Engine {
    /// Services suspended at least `after`: what the clean-up terminates.
    pub async fn cleanup_candidates(&self, after: Duration) -> Result<Vec<Service>> {
        self.all_services(&ServiceFilter {
            suspended_before: Some(since_cutoff(self.now(), after)),
            ..Default::default()
        })
        .await
    }

    /// Terminates services suspended at least `after` (or says what it would do).
    pub async fn cleanup(&self, after: Duration, dry_run: bool) -> Result<Vec<MemberResult>> {
        let mut out = Vec::new();
        for s in self.cleanup_candidates(after).await? {
            let since = s.suspension.as_ref().map(|x| x.since);
            let mut r = member(
                &s,
                "",
                "terminate",
                "planned",
                since.map(|t| format!("suspended since {}", t.to_rfc3339())),
            );
            r.role = "-".into();
            if !dry_run {
                match self
                    .request_action(s.id, Action::Terminate, ActionInput::default())
                    .await
                {
                    Ok(j) => {
                        r.outcome = "queued".into();
                        r.job_id = Some(j.id.0);
                    }
                    Err(e @ (EngineError::Conflict { .. } | EngineError::Forbidden { .. })) => {
                        r.outcome = "refused".into();
                        r.detail = Some(e.to_string());
                    }
                    Err(e) => return Err(e),
                }
            }
            out.push(r);
        }
        Ok(out)
    }
}
