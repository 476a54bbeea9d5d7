//! Single sign-on between group members: a link into one's own service or from the master
//! down to its children, never up or sideways.

use super::*;

impl Engine {
    /// A short-lived single sign-on link into a service, from modules that offer one.
    /// With `from`, the link is asked for on behalf of that service's holder: allowed into
    /// itself, or from a group's master into one of its children, never the other way or
    /// between children.
    pub async fn login_url(
        self: &std::sync::Arc<Self>,
        id: ServiceId,
        from: Option<ServiceId>,
    ) -> Result<String> {
        let target = self.get_service(id).await?;
        if let Some(from) = from.filter(|f| *f != id) {
            let source = self.get_service(from).await?;
            let is_master_of = source
                .invoice
                .as_ref()
                .zip(target.parent_invoice.as_ref())
                .is_some_and(|(i, p)| i.as_str() == p.as_str());
            if !is_master_of {
                return Err(EngineError::Conflict {
                    field: Some("from_service".into()),
                    message: format!(
                        "service {from} may not sign in to service {id}: only a group's master (its invoice is the other's parent_invoice) may enter its children"
                    ),
                });
            }
        }
        if target.status != ServiceStatus::Active {
            return Err(EngineError::Conflict {
                field: None,
                message: format!(
                    "service {id} is {}; only active services can be entered",
                    target.status.as_str()
                ),
            });
        }
        self.module_login_url(&target).await
    }
}
