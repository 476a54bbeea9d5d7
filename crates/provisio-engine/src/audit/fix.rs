//! Fixing drift: the guarded corrections an audit makes on either side (local records or the
//! remote), each through the normal action path or a recorded correction.

use super::*;

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fix_one(
        &self,
        audit: i64,
        server: &Server,
        mode: FixMode,
        plan: &Plan,
        packages: &Packages,
        statuses: &HashMap<ServiceId, ServiceStatus>,
        f: &Finding,
    ) -> String {
        let dry = plan.dry_run;
        let sid = f.service_id.map(ServiceId);
        let local = sid.and_then(|s| statuses.get(&s).copied());
        let remote = f.remote_status.as_deref().and_then(remote_status);
        let outcome = |r: Result<String>| match r {
            Ok(s) => s,
            Err(e) => format!("failed: {}", public(&e)),
        };
        match (mode, f.kind) {
            (FixMode::Local, DriftKind::OrphanRemote) => {
                let product = f
                    .remote_package
                    .as_ref()
                    .and_then(|p| packages.by_package.get(p).copied())
                    .or(plan.product);
                let (Some(client), Some(product)) = (plan.client, product) else {
                    return "none: no product matches the remote package; give product".into();
                };
                let Ok(username) = Username::parse(&f.username) else {
                    return "none: the username is not valid locally".into();
                };
                let status = remote.unwrap_or(ServiceStatus::Active);
                let what = format!(
                    "import as a {} service of client {client}, product {product}",
                    status.as_str()
                );
                if dry {
                    return what;
                }
                let new = NewService {
                    order_key: None,
                    client_id: client,
                    product_id: product,
                    server_id: server.id,
                    username,
                    password: self.seal_secret(&provisio_core::secret::generate_password(24)),
                    status,
                    invoice: None,
                    parent_invoice: None,
                    settings: Settings::new(),
                    external_id: None,
                };
                outcome(
                    self.store
                        .audit_import(&new, audit)
                        .await
                        .map(|s| format!("imported as service {}", s.id))
                        .map_err(Into::into),
                )
            }
            (FixMode::Local, DriftKind::MissingRemote) => {
                let (Some(sid), Some(local)) = (sid, local) else {
                    return "none: the service is gone".into();
                };
                if dry {
                    return "mark failed".into();
                }
                outcome(self.correct(sid, local, Some(ServiceStatus::Failed), None, audit, "marked failed").await)
            }
            (FixMode::Local, DriftKind::StatusMismatch) => {
                let (Some(sid), Some(local)) = (sid, local) else {
                    return "none: the service is gone".into();
                };
                let Some(to) = remote else {
                    return "none: the remote status has no local meaning".into();
                };
                let what = format!("set status {}", to.as_str());
                if dry {
                    return what;
                }
                outcome(self.correct(sid, local, Some(to), None, audit, &what).await)
            }
            (FixMode::Local, DriftKind::PackageMismatch) => {
                let (Some(sid), Some(local)) = (sid, local) else {
                    return "none: the service is gone".into();
                };
                let Some(product) = f
                    .remote_package
                    .as_ref()
                    .and_then(|p| packages.by_package.get(p).copied())
                else {
                    return "none: no product has the remote package".into();
                };
                let what = format!("set product {product}");
                if dry {
                    return what;
                }
                outcome(self.correct(sid, local, None, Some(product), audit, &what).await)
            }
            (FixMode::Remote, DriftKind::OrphanRemote) => {
                "none: a remote fix never deletes an account no local record names; import it with fix local, then terminate it".into()
            }
            (FixMode::Remote, DriftKind::MissingRemote) => {
                let (Some(sid), Some(local)) = (sid, local) else {
                    return "none: the service is gone".into();
                };
                if dry {
                    return "mark failed, then create".into();
                }
                outcome(
                    async {
                        if self
                            .store
                            .audit_correct(sid, local, Some(ServiceStatus::Failed), None, audit)
                            .await?
                            .is_none()
                        {
                            return Ok("none: the service changed meanwhile".to_string());
                        }
                        let job = self.request_action(sid, Action::Create, ActionInput::default()).await?;
                        Ok(format!("marked failed, create queued (job {})", job.id))
                    }
                    .await,
                )
            }
            (FixMode::Remote, DriftKind::StatusMismatch) => {
                let (Some(sid), Some(local)) = (sid, local) else {
                    return "none: the service is gone".into();
                };
                let Some(seen) = remote else {
                    return "none: the remote status has no local meaning".into();
                };
                let (action, reason) = match local {
                    ServiceStatus::Active => (Action::Unsuspend, None),
                    _ => {
                        let reason = match self.get_service(sid).await {
                            Ok(s) => s.suspension.map(|x| x.reason.as_str().to_string()),
                            Err(e) => return format!("failed: {}", public(&e)),
                        };
                        (Action::Suspend, reason)
                    }
                };
                if dry {
                    return format!("record status {}, then {action}", seen.as_str());
                }
                outcome(
                    async {
                        if self
                            .store
                            .audit_correct(sid, local, Some(seen), None, audit)
                            .await?
                            .is_none()
                        {
                            return Ok("none: the service changed meanwhile".to_string());
                        }
                        let job = self
                            .request_action(
                                sid,
                                action.clone(),
                                ActionInput {
                                    reason,
                                    ..Default::default()
                                },
                            )
                            .await?;
                        Ok(format!("{action} queued (job {})", job.id))
                    }
                    .await,
                )
            }
            (FixMode::Remote, DriftKind::PackageMismatch) => {
                let (Some(sid), Some(local)) = (sid, local) else {
                    return "none: the service is gone".into();
                };
                // Like a status: record the package the remote has, then change back
                // through the ordinary action (which refuses a change to the same product).
                let Some(seen) = f
                    .remote_package
                    .as_ref()
                    .and_then(|p| packages.by_package.get(p).copied())
                else {
                    return "none: no local product has the remote package, so change_package cannot name where it comes from".into();
                };
                let product = match self.get_service(sid).await {
                    Ok(s) => s.product_id,
                    Err(e) => return format!("failed: {}", public(&e)),
                };
                if dry {
                    return format!("record product {seen}, then change_package to product {product}");
                }
                outcome(
                    async {
                        if self
                            .store
                            .audit_correct(sid, local, None, Some(seen), audit)
                            .await?
                            .is_none()
                        {
                            return Ok("none: the service changed meanwhile".to_string());
                        }
                        let job = self
                            .request_action(
                                sid,
                                Action::ChangePackage,
                                ActionInput {
                                    product: Some(RecordRef::Id(product.0)),
                                    ..Default::default()
                                },
                            )
                            .await?;
                        Ok(format!("change_package queued (job {})", job.id))
                    }
                    .await,
                )
            }
        }
    }

    pub(super) async fn correct(
        &self,
        sid: ServiceId,
        expected: ServiceStatus,
        status: Option<ServiceStatus>,
        product: Option<ProductId>,
        audit: i64,
        what: &str,
    ) -> Result<String> {
        Ok(
            match self
                .store
                .audit_correct(sid, expected, status, product, audit)
                .await?
            {
                Some(_) => what.to_string(),
                None => "none: the service changed meanwhile".into(),
            },
        )
    }
}
