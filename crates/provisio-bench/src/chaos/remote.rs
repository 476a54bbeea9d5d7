//! The chaos run's remote: a users API on a raw `TcpListener` (so it can cut a connection
//! after reading a request) that mistreats about a third of the changes it receives and
//! records every effect it applies under the request's idempotency key.
//!
//! It does not honour `Idempotency-Key`: only the engine's lookup before a retry keeps an
//! effect from being applied twice, which is what the run measures. It is strict about
//! state (a second create, a suspend of a suspended user, a plan change to the plan the
//! user has, anything on a missing user is refused and recorded), so a change sent again
//! after it took effect shows up as a refusal when it does not show up as a second effect.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the remote mistreats one change. Each kind hits one change in 18, so together
/// they hit a third.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// 503, nothing applied.
    Busy,
    /// Applied, then no answer until the client gives up.
    AppliedThenSilent,
    /// Applied, then the connection is reset (RST) without an answer.
    AppliedThenReset,
    /// Not applied; the connection is reset without an answer.
    Reset,
    /// Not applied; the connection is closed (FIN) without an answer.
    Closed,
    /// Answered correctly, but only after most of the client's timeout.
    Slow,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Busy => "503",
            Fault::AppliedThenSilent => "applied-then-timeout",
            Fault::AppliedThenReset => "applied-then-reset",
            Fault::Reset => "reset",
            Fault::Closed => "close",
            Fault::Slow => "slow",
        }
    }
}

/// One effect the remote applied.
#[derive(Clone, Debug)]
pub struct Effect {
    pub key: String,
    pub action: &'static str,
    pub user: String,
}

#[derive(Clone, Debug)]
pub struct User {
    pub suspended: bool,
    pub plan: String,
}

pub struct RemoteState {
    pub users: HashMap<String, User>,
    /// Every effect applied, in order.
    pub applied: Vec<Effect>,
    /// Changes refused because they made no sense on the state (each is a change sent
    /// again after it took effect, or sent where it could not apply).
    pub refused: Vec<String>,
    /// Requests received, and how many were mistreated, by kind.
    pub requests: u64,
    pub lookups: u64,
    pub faults: BTreeMap<Fault, u64>,
    pub lookup_failures: u64,
    rng: StdRng,
}

impl RemoteState {
    /// A remote with no users; `seed` decides which calls are mistreated.
    pub fn new(seed: u64) -> Self {
        Self {
            users: HashMap::new(),
            applied: Vec::new(),
            refused: Vec::new(),
            requests: 0,
            lookups: 0,
            faults: BTreeMap::new(),
            lookup_failures: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

pub struct Remote {
    pub base_url: String,
    state: Arc<Mutex<RemoteState>>,
    accept: tokio::task::JoinHandle<()>,
    /// How long a slow answer takes, at most (below the module's timeout).
    slow: Duration,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Remote {
    /// Starts the remote on a free loopback port; `slow` bounds the delay of a slow answer.
    pub async fn start(seed: u64, slow: Duration) -> anyhow::Result<Remote> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(RemoteState::new(seed)));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(serve(sock, shared.clone(), slow));
            }
        });
        Ok(Remote {
            base_url: format!("http://{addr}"),
            state,
            accept,
            slow,
        })
    }

    pub fn with<R>(&self, f: impl FnOnce(&RemoteState) -> R) -> R {
        f(&self.state.lock().expect("remote state"))
    }

    /// The `http` module settings of a server pointing here. Later actions address the
    /// user by the remote id the create (or a lookup) returned, so a service whose outputs
    /// were lost cannot act at all.
    pub fn server_settings(&self) -> Value {
        let by_id = "/users/{{ service.outputs.remote_id }}";
        // The slow answer must come well inside the timeout, or it is a timeout.
        let timeout = (self.slow.as_secs() + 2).max(2);
        json!({
            "base_url": self.base_url,
            "timeout_seconds": timeout,
            "actions": {
                "create": {
                    "method": "POST",
                    "url": "/users",
                    "body": {"userName": "{{ service.username }}", "plan": "{{ product.settings.package }}"},
                    "success": {"status": [201]},
                    "errors": {"permanent": [409]},
                    "outputs": {"remote_id": "/id"},
                },
                "suspend": {"method": "PATCH", "url": by_id, "body": {"active": false}},
                "unsuspend": {"method": "PATCH", "url": by_id, "body": {"active": true}},
                "change_package": {
                    "method": "PUT",
                    "url": format!("{by_id}/plan"),
                    "body": {"plan": "{{ params.new_product.package }}"},
                },
                // 404 is not a success: a second delete fails the job instead of hiding.
                "terminate": {"method": "DELETE", "url": by_id, "success": {"status": [204]}},
                "lookup": {
                    "method": "GET",
                    "url": "/users/{{ service.username }}",
                    "account": {"username": "/userName", "status": "/status", "package": "/plan"},
                    "outputs": {"remote_id": "/id"},
                },
            },
        })
    }
}

struct Request {
    method: String,
    path: String,
    key: String,
    body: Value,
}

/// Reads one request: request line, headers, `Content-Length` bytes of body.
async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = match headers.get("content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Request {
        method,
        path,
        key: headers.get("idempotency-key").cloned().unwrap_or_default(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

async fn respond(sock: &mut TcpStream, status: u16, body: Option<Value>) {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        404 => "Not Found",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(text.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A change as the remote understands it.
struct Change {
    action: &'static str,
    user: String,
    plan: Option<String>,
}

/// The user a path names by remote id: `/users/id-<userName>[/plan]`.
fn by_id(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/users/id-")?;
    Some(rest.strip_suffix("/plan").unwrap_or(rest).to_string())
}

fn change(req: &Request) -> Option<Change> {
    let text = |p: &str| req.body.get(p).and_then(Value::as_str).map(String::from);
    let (action, user, plan) = match req.method.as_str() {
        "POST" if req.path == "/users" => ("create", text("userName")?, Some(text("plan")?)),
        "PATCH" => match req.body.get("active")?.as_bool()? {
            false => ("suspend", by_id(&req.path)?, None),
            true => ("unsuspend", by_id(&req.path)?, None),
        },
        "PUT" if req.path.ends_with("/plan") => {
            ("change_package", by_id(&req.path)?, Some(text("plan")?))
        }
        "DELETE" => ("terminate", by_id(&req.path)?, None),
        _ => return None,
    };
    Some(Change { action, user, plan })
}

/// Applies a change; `Err` with a status when it makes no sense on the current state.
fn apply(st: &mut RemoteState, c: &Change, key: &str) -> Result<(), u16> {
    let user = st.users.get_mut(&c.user);
    let refused = match (c.action, user) {
        ("create", Some(_)) => Some(409),
        ("create", None) => {
            let plan = c.plan.clone().unwrap_or_default();
            st.users.insert(
                c.user.clone(),
                User {
                    suspended: false,
                    plan,
                },
            );
            None
        }
        (_, None) => Some(404),
        ("suspend", Some(u)) if !u.suspended => {
            u.suspended = true;
            None
        }
        ("unsuspend", Some(u)) if u.suspended => {
            u.suspended = false;
            None
        }
        ("change_package", Some(u)) if c.plan.as_ref().is_some_and(|p| *p != u.plan) => {
            u.plan = c.plan.clone().unwrap_or_default();
            None
        }
        ("terminate", Some(_)) => {
            st.users.remove(&c.user);
            None
        }
        _ => Some(409),
    };
    match refused {
        Some(status) => {
            st.refused
                .push(format!("{} {} ({key}): {status}", c.action, c.user));
            Err(status)
        }
        None => {
            st.applied.push(Effect {
                key: key.to_string(),
                action: c.action,
                user: c.user.clone(),
            });
            Ok(())
        }
    }
}

fn account(user: &str, u: &User) -> Value {
    json!({
        "id": format!("id-{user}"),
        "userName": user,
        "status": if u.suspended { "suspended" } else { "active" },
        "plan": u.plan,
    })
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<RemoteState>>, slow: Duration) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    if req.method == "GET" {
        let user = req.path.strip_prefix("/users/").unwrap_or("").to_string();
        let (status, body, cut) = {
            let mut st = state.lock().expect("remote state");
            st.requests += 1;
            st.lookups += 1;
            // Lookups fail too (one in ten), so the engine must cope with a lookup
            // that tells nothing.
            match st.rng.gen_range(0..20) {
                0 => {
                    st.lookup_failures += 1;
                    (503, None, false)
                }
                1 => {
                    st.lookup_failures += 1;
                    (0, None, true)
                }
                _ => match st.users.get(&user) {
                    Some(u) => (200, Some(account(&user, u)), false),
                    None => (404, Some(json!({"error": "no such user"})), false),
                },
            }
        };
        if cut {
            let _ = sock.set_zero_linger();
            drop(sock);
        } else {
            respond(&mut sock, status, body).await;
        }
        return;
    }

    let Some(c) = change(&req) else {
        state
            .lock()
            .expect("remote state")
            .refused
            .push(format!("not understood: {} {}", req.method, req.path));
        respond(&mut sock, 400, Some(json!({"error": "not understood"}))).await;
        return;
    };
    let (fault, delay) = {
        let mut st = state.lock().expect("remote state");
        st.requests += 1;
        let fault = match st.rng.gen_range(0..18) {
            0 => Some(Fault::Busy),
            1 => Some(Fault::AppliedThenSilent),
            2 => Some(Fault::AppliedThenReset),
            3 => Some(Fault::Reset),
            4 => Some(Fault::Closed),
            5 => Some(Fault::Slow),
            _ => None,
        };
        if let Some(f) = fault {
            *st.faults.entry(f).or_default() += 1;
        }
        let delay = st
            .rng
            .gen_range(slow.as_millis() as u64 / 2..=slow.as_millis() as u64);
        (fault, Duration::from_millis(delay))
    };
    if fault == Some(Fault::Slow) {
        tokio::time::sleep(delay).await;
    }
    let applies = matches!(
        fault,
        None | Some(Fault::Slow | Fault::AppliedThenSilent | Fault::AppliedThenReset)
    );
    let result = applies.then(|| apply(&mut state.lock().expect("remote state"), &c, &req.key));
    match fault {
        None | Some(Fault::Slow) => match result.expect("applied") {
            Ok(()) => {
                let body = {
                    let st = state.lock().expect("remote state");
                    st.users.get(&c.user).map(|u| account(&c.user, u))
                };
                match c.action {
                    "create" => respond(&mut sock, 201, body).await,
                    "terminate" => respond(&mut sock, 204, None).await,
                    _ => respond(&mut sock, 200, body).await,
                }
            }
            Err(status) => respond(&mut sock, status, Some(json!({"error": "refused"}))).await,
        },
        Some(Fault::Busy) => respond(&mut sock, 503, Some(json!({"error": "maintenance"}))).await,
        Some(Fault::AppliedThenSilent) => {
            // Nothing until the client gives up and closes (bounded, in case it never does).
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut rest)).await;
        }
        Some(Fault::AppliedThenReset | Fault::Reset) => {
            // SO_LINGER 0: dropping the socket sends RST instead of FIN.
            let _ = sock.set_zero_linger();
            drop(sock);
        }
        Some(Fault::Closed) => {
            let _ = sock.shutdown().await;
        }
    }
}
