//! Who may call which route. Every route file declares an `ACCESS` table beside its routes:
//! what each operation needs. One middleware authenticates the key, finds the operation's
//! rule, refuses what the key's role may not do (403 naming the roles that may; 404 for
//! scoped keys, so ids do not leak) and hands the handler a [`Caller`] for scope checks.
//!
//! An operation without a rule is refused: access fails closed, and a test checks that
//! every operation of the OpenAPI document has one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use provisio_core::access::{Role, Scope, CLIENT_DEFAULT_ACTIONS};
use provisio_core::client::Client;
use provisio_core::job::JobId;
use provisio_core::service::Service;
use provisio_core::{ClientId, ServiceId};
use provisio_engine::Engine;

use crate::error::ApiError;
use crate::AppState;

/// The two kinds of records the roles tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// What a billing system works with: clients and their transactions, services and their
    /// actions, jobs, events, groups, collect, usage, login links and audit reports.
    Billing,
    /// How the instance is set up and run: servers, products, handlers, rules, modules,
    /// resellers, starting audits (and their fixes), deliveries, job repair and clean-up.
    Setup,
}

/// What an operation needs of the key that calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read(Area),
    Write(Area),
    /// A stored secret: a service's password.
    Secret,
    /// API keys themselves.
    Keys,
}

/// One operation's rule: its method and OpenAPI path, what it needs, and whether client
/// and reseller keys may use it (within their own records).
#[derive(Debug, Clone)]
pub struct Access {
    pub method: Method,
    pub path: &'static str,
    pub need: Need,
    pub client: bool,
    pub reseller: bool,
}

/// A rule for every role its need allows; a reseller key, in the billing area, on its own
/// clients' records.
pub const fn rule(method: Method, path: &'static str, need: Need) -> Access {
    Access {
        method,
        path,
        need,
        client: false,
        reseller: true,
    }
}

/// A rule that a client key may also use, on its own records.
pub const fn client_rule(method: Method, path: &'static str, need: Need) -> Access {
    Access {
        method,
        path,
        need,
        client: true,
        reseller: true,
    }
}

/// A billing rule over the whole instance (a usage sync of every server, audit reports): no
/// scoped key may use it.
pub const fn fleet_rule(method: Method, path: &'static str, need: Need) -> Access {
    Access {
        method,
        path,
        need,
        client: false,
        reseller: false,
    }
}

pub const READ_BILLING: Need = Need::Read(Area::Billing);
pub const WRITE_BILLING: Need = Need::Write(Area::Billing);
pub const READ_SETUP: Need = Need::Read(Area::Setup);
pub const WRITE_SETUP: Need = Need::Write(Area::Setup);

/// Whether a key of `role` (with `reveal` = its `reveal_secrets`) may use `rule`, scope
/// aside.
pub fn permits(role: Role, reveal: bool, rule: &Access) -> bool {
    match (role, rule.need) {
        (Role::Admin, _) => true,
        (_, Need::Keys) => false,
        (Role::Readonly, Need::Read(_)) => true,
        (Role::Readonly, _) => false,
        (Role::Operator, Need::Secret) => reveal,
        (Role::Operator, _) => true,
        (Role::Billing, Need::Read(Area::Billing) | Need::Write(Area::Billing)) => true,
        (Role::Reseller, Need::Read(Area::Billing) | Need::Write(Area::Billing)) => rule.reseller,
        (Role::Billing, Need::Secret) => reveal,
        (Role::Reseller, Need::Secret) => rule.reseller && reveal,
        (Role::Billing | Role::Reseller, _) => false,
        (Role::Client, Need::Secret) => rule.client && reveal,
        (Role::Client, _) => rule.client,
    }
}

/// The roles that may use `rule`, for a 403's answer and the OpenAPI document.
pub fn roles_for(rule: &Access) -> Vec<&'static str> {
    Role::ALL
        .into_iter()
        .filter(|r| permits(*r, true, rule))
        .map(Role::as_str)
        .collect()
}

/// The key behind a request, as handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: i64,
    pub key_name: String,
    pub role: Role,
    pub scope: Option<Scope>,
    actions: Option<Vec<String>>,
}

impl Caller {
    /// The caller a live key makes (the console's session key).
    pub(crate) fn from_key(key: provisio_store::ApiKey) -> Self {
        Self {
            key_id: key.id,
            key_name: key.name,
            role: key.role,
            scope: key.scope,
            actions: key.actions,
        }
    }

    fn hidden(what: &str, id: impl std::fmt::Display) -> ApiError {
        // The same answer as for a record that does not exist, so ids do not leak.
        ApiError::not_found(format!("{what} {id} not found"))
    }

    /// Whether the caller's scope holds `client`.
    pub fn sees(&self, client: &Client) -> bool {
        provisio_engine::groups::in_scope(self.scope, client)
    }

    /// The client, if the caller may see it.
    pub async fn client(&self, engine: &Engine, id: ClientId) -> Result<Client, ApiError> {
        let c = engine.get_client(id).await?;
        if self.sees(&c) {
            Ok(c)
        } else {
            Err(Self::hidden("client", id))
        }
    }

    /// Refuses (as not found) a service outside the caller's scope.
    pub async fn service(&self, engine: &Engine, id: ServiceId) -> Result<(), ApiError> {
        let Some(scope) = self.scope else {
            return Ok(());
        };
        let s: Service = engine.get_service(id).await?;
        let inside = match scope {
            Scope::Client(c) => s.client_id == c,
            Scope::Reseller(_) => engine
                .get_client(s.client_id)
                .await
                .is_ok_and(|c| self.sees(&c)),
        };
        if inside {
            Ok(())
        } else {
            Err(Self::hidden("service", id))
        }
    }

    /// Refuses (as not found) a job of a service outside the caller's scope.
    pub async fn job(&self, engine: &Engine, id: JobId) -> Result<(), ApiError> {
        if self.scope.is_none() {
            return Ok(());
        }
        let j = engine.get_job(id).await?;
        self.service(engine, j.job.service_id)
            .await
            .map_err(|_| Self::hidden("job", id))
    }

    /// Refuses an action a client key does not name (`change_password`, `login_url`,
    /// `usage`); every other role's actions come with its role.
    pub fn may_run(&self, action: &str) -> Result<(), ApiError> {
        if self.role != Role::Client {
            return Ok(());
        }
        let allowed = match &self.actions {
            Some(a) => a.iter().any(|x| x == action),
            None => CLIENT_DEFAULT_ACTIONS.contains(&action),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden_role(
                format!(
                    "this client key may not run '{action}'; a key naming it in its actions may"
                ),
                vec![],
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::internal)
    }
}

/// Counts failed authentications per client address: past `limit` in a window, the
/// address is refused (429 with `Retry-After`) whatever key it presents, until the window
/// ends, so keys cannot be guessed at speed.
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `ip` may try again, if it is refused now.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let seen = self.seen.lock().expect("not poisoned");
        let (start, n) = *seen.get(&ip)?;
        let left = self.window.checked_sub(now.duration_since(start))?;
        (n >= self.limit).then(|| left.as_secs().max(1))
    }

    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().expect("not poisoned");
        // Bounded memory: addresses whose window ended are forgotten when the map grows.
        if seen.len() > 10_000 {
            seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

fn too_many(retry_after: u64) -> Response {
    let mut r = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "too-many-failures",
        "Too many failed authentications",
        format!("too many requests with an invalid API key from this address; try again in {retry_after} s"),
    )
    .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        retry_after.to_string().parse().expect("a number"),
    );
    r
}

/// The shared state of the access middleware.
#[derive(Clone)]
pub struct Gate {
    pub app: AppState,
    pub failures: Arc<AuthFailures>,
    pub rules: Arc<HashMap<(Method, &'static str), Access>>,
}

pub(crate) fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Authenticates the key (`Authorization: Bearer KEY`) and applies the operation's rule.
pub async fn require_key(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    // One reading of the catalog generation serves the key check and every kept record
    // the request reads after it (see `provisio_engine`'s catalog cache).
    let engine = gate.app.engine.clone();
    match engine.with_catalog(checked(gate, req, next)).await {
        Ok(r) => r,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn checked(gate: Gate, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
    let now = Instant::now();
    if let Some(wait) = gate.failures.blocked(ip, now) {
        return too_many(wait);
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::unauthorized("an API key is required: send 'Authorization: Bearer KEY'")
            .into_response();
    };
    let key = match gate.app.engine.authenticate(presented).await {
        Ok(Ok(k)) => k,
        Ok(Err(refusal)) => {
            gate.failures.failed(ip, now);
            // The presented key is never logged; its first characters name no one.
            tracing::warn!(client = %ip, reason = refusal.message(), "authentication failed");
            return ApiError::unauthorized(refusal.message()).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(rule) = gate.rules.get(&(req.method().clone(), path.as_str())) else {
        tracing::error!(method = %req.method(), path, "an operation has no access rule; refused");
        return ApiError::forbidden_role("this operation has no access rule", vec!["admin".into()])
            .into_response();
    };
    if !permits(key.role, key.reveal_secrets, rule) {
        if key.role.is_scoped() {
            return ApiError::not_found("not found").into_response();
        }
        let roles: Vec<String> = roles_for(rule).into_iter().map(String::from).collect();
        let secret = rule.need == Need::Secret && key.role != Role::Readonly;
        let detail = if secret {
            format!(
                "reading a secret needs a key with reveal_secrets; this {} key has none",
                key.role.as_str()
            )
        } else {
            format!(
                "this needs the role {}; the key has the role {}",
                roles.join(" or "),
                key.role.as_str()
            )
        };
        return ApiError::forbidden_role(detail, roles).into_response();
    }
    let actor = provisio_core::access::Actor::Key {
        id: key.id,
        name: key.name.clone(),
    };
    req.extensions_mut().insert(Caller {
        key_id: key.id,
        key_name: key.name,
        role: key.role,
        scope: key.scope,
        actions: key.actions,
    });
    // Everything the request writes records this key as its cause.
    provisio_store::acting(actor, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_table() {
        let keys = rule(Method::GET, "/v1/keys", Need::Keys);
        assert_eq!(roles_for(&keys), ["admin"]);
        let setup = rule(Method::POST, "/v1/servers", WRITE_SETUP);
        assert_eq!(roles_for(&setup), ["admin", "operator"]);
        let read = rule(Method::GET, "/v1/servers", READ_SETUP);
        assert_eq!(roles_for(&read), ["admin", "operator", "readonly"]);
        let orders = client_rule(Method::GET, "/v1/services", READ_BILLING);
        assert_eq!(
            roles_for(&orders),
            ["admin", "operator", "billing", "readonly", "client", "reseller"]
        );
        let pw = client_rule(Method::GET, "/v1/services/{id}/password", Need::Secret);
        assert!(!permits(Role::Operator, false, &pw));
        assert!(permits(Role::Operator, true, &pw));
        assert!(!permits(Role::Readonly, true, &pw));
        assert!(permits(Role::Admin, false, &pw));
    }

    #[test]
    fn failures_block_an_address_for_the_window() {
        let f = AuthFailures::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(f.blocked(ip, t), None);
            f.failed(ip, t);
        }
        assert!(f.blocked(ip, t).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(f.blocked("192.0.2.2".parse().unwrap(), t), None);
        assert_eq!(f.blocked(ip, t + Duration::from_secs(61)), None);
    }
}
