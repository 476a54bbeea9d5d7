//! The `http` module against a local remote that fails about a third of requests (503,
//! silence past the module's timeout, connections cut after the request arrived): every
//! action completes, none is applied twice, and the failed-then-retried history is visible.
//!
//! The remote is a raw HTTP/1.1 server on a `TcpListener`, because it must be able to cut a
//! connection after reading a request. It does not honour `Idempotency-Key`, so only the
//! engine's lookup before a retry keeps an effect from being applied twice.
//!
//! Which requests fail is fixed per job: the remote numbers the requests it receives for
//! each idempotency key and fails the first ones according to a plan chosen from the
//! (username, action) pair. So the test never depends on how concurrent jobs interleave,
//! and each job's attempt history can be predicted exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{spawn_app_with, Db, TestApp};

/// Enough retries for the longest plan, short delays, a breaker that never opens.
const JOBS: &str = "[jobs]\n\
retry_schedule = [\"50ms\", \"50ms\", \"100ms\", \"100ms\", \"200ms\", \"200ms\", \"300ms\", \"300ms\", \"500ms\", \"500ms\"]\n\
retry_jitter = 0.0\n\
lease_seconds = 5\n\
poll_interval_ms = 20\n\
breaker_failures = 1000\n\
breaker_open_seconds = 1\n";

const USERS: usize = 60;

/// How the remote mistreats one mutating request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// 503, nothing applied.
    Busy,
    /// Applied, then no answer until the client gives up (past `timeout_seconds`).
    AppliedThenSilent,
    /// Applied, then the connection is reset (RST) without an answer.
    AppliedThenReset,
    /// Not applied, and the connection is reset without an answer.
    ResetBeforeApplying,
    /// Not applied, and the connection is closed (FIN) without an answer.
    ClosedBeforeApplying,
}

impl Fault {
    fn applies(self) -> bool {
        matches!(self, Fault::AppliedThenSilent | Fault::AppliedThenReset)
    }
    /// Whether the engine cannot tell if the request took effect.
    fn unknown(self) -> bool {
        self != Fault::Busy
    }
}

/// The faults of one job's first mutating requests, and how many of its first lookups
/// answer 503. A third of the jobs run cleanly; with the retries the others cause, about a
/// third of all requests fail (91 of 251 in the test below).
struct Plan {
    faults: &'static [Fault],
    lookup_failures: u32,
}

fn plan(user: usize, action: &str) -> Plan {
    use Fault::*;
    let code = match action {
        "create" => 0,
        "suspend" => 1,
        "unsuspend" => 2,
        "terminate" => 3,
        other => panic!("no plan for {other}"),
    };
    let (faults, lookup_failures): (&'static [Fault], u32) = match (user * 7 + code * 4) % 15 {
        1 | 10 => (&[Busy], 0),
        2 | 11 => (&[AppliedThenSilent], 0),
        4 | 13 => (&[ResetBeforeApplying], 0),
        5 => (&[AppliedThenReset], 1),
        7 => (&[Busy, ClosedBeforeApplying], 0),
        8 => (&[AppliedThenReset], 0),
        14 => (&[ClosedBeforeApplying, Busy], 0),
        _ => (&[], 0),
    };
    Plan {
        faults,
        lookup_failures,
    }
}

/// The attempts the engine must record for a job with this plan, as (outcome, a piece of
/// its message): a transient failure is retried as is; after an unknown outcome every
/// attempt looks the account up first (a failed lookup is itself an unknown outcome) and
/// is skipped once the lookup shows the effect.
fn expected_history(p: &Plan) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let (mut needs_lookup, mut applied) = (false, false);
    let (mut next_fault, mut lookup_failures) = (0, p.lookup_failures);
    loop {
        if needs_lookup {
            if lookup_failures > 0 {
                lookup_failures -= 1;
                out.push(("unknown", "lookup before retrying failed"));
                continue;
            }
            if applied {
                out.push(("skipped", "already taken effect"));
                return out;
            }
        }
        let Some(&fault) = p.faults.get(next_fault) else {
            out.push(("ok", ""));
            return out;
        };
        next_fault += 1;
        applied |= fault.applies();
        needs_lookup |= fault.unknown();
        out.push(match fault {
            Fault::Busy => ("transient", "HTTP 503"),
            Fault::AppliedThenSilent => ("unknown", "no answer came within 3 s"),
            _ => ("unknown", "the connection failed"),
        });
    }
}

/// One request as the remote received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    key: String,
    fault: Option<Fault>,
    /// Answered 503 or not at all.
    failed: bool,
}

#[derive(Default)]
struct RemoteState {
    /// userName -> "active" | "suspended".
    users: BTreeMap<String, String>,
    /// (action, user, idempotency key) of every effect applied, in order.
    applied: Vec<(String, String, String)>,
    /// Mutating requests refused because they made no sense (a second create, a change
    /// to a missing user): each would be an action sent twice.
    refused: Vec<String>,
    /// Every request, in the order received.
    requests: Vec<Seen>,
    /// Mutating requests and lookups received so far, per idempotency key.
    mutations_per_key: HashMap<String, usize>,
    lookups_per_key: HashMap<String, u32>,
    /// The (user, action) a key was first seen with, to plan its lookups.
    key_job: HashMap<String, (String, String)>,
}

struct Remote {
    base_url: String,
    state: Arc<Mutex<RemoteState>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Remote {
    async fn start() -> Remote {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RemoteState::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(sock, shared.clone()));
            }
        });
        Remote {
            base_url: format!("http://{addr}"),
            state,
            accept,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&RemoteState) -> R) -> R {
        f(&self.state.lock().unwrap())
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
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
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().ok())
        .unwrap_or(Some(0))?;
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
        headers,
        body,
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

/// What a mutating request asks for: (action, user), or None when it is not understood.
fn mutation(req: &Request) -> Option<(String, String)> {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let user_in_path = path_user(&req.path);
    match req.method.as_str() {
        "POST" if req.path == "/users" => {
            Some(("create".into(), body.get("userName")?.as_str()?.to_string()))
        }
        "PATCH" => match body.get("active")?.as_bool()? {
            false => Some(("suspend".into(), user_in_path?)),
            true => Some(("unsuspend".into(), user_in_path?)),
        },
        "DELETE" => Some(("terminate".into(), user_in_path?)),
        _ => None,
    }
}

/// Applies an effect; `Err` with a status when it makes no sense on the current state.
fn apply(st: &mut RemoteState, action: &str, user: &str, key: &str) -> Result<(), u16> {
    let exists = st.users.contains_key(user);
    let refused = match action {
        "create" if exists => Some(409),
        "create" => {
            st.users.insert(user.into(), "active".into());
            None
        }
        _ if !exists => Some(404),
        "suspend" => {
            st.users.insert(user.into(), "suspended".into());
            None
        }
        "unsuspend" => {
            st.users.insert(user.into(), "active".into());
            None
        }
        "terminate" => {
            st.users.remove(user);
            None
        }
        _ => Some(400),
    };
    match refused {
        Some(status) => {
            st.refused
                .push(format!("{action} {user} ({key}): {status}"));
            Err(status)
        }
        None => {
            st.applied.push((action.into(), user.into(), key.into()));
            Ok(())
        }
    }
}

/// The user a path names: `/users/<userName>`, or `/users/id-<userName>` by the remote id.
fn path_user(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/users/")?;
    Some(rest.strip_prefix("id-").unwrap_or(rest).to_string())
}

fn username_index(user: &str) -> usize {
    user.trim_start_matches('f').parse().unwrap()
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<RemoteState>>) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let key = req
        .headers
        .get("idempotency-key")
        .cloned()
        .unwrap_or_default();

    if req.method == "GET" {
        let user = path_user(&req.path).unwrap_or_default();
        let answer = {
            let mut st = state.lock().unwrap();
            let n = st.lookups_per_key.entry(key.clone()).or_default();
            *n += 1;
            let n = *n;
            let failures = st
                .key_job
                .get(&key)
                .map(|(u, a)| plan(username_index(u), a).lookup_failures)
                .unwrap_or(0);
            st.requests.push(Seen {
                method: req.method.clone(),
                path: req.path.clone(),
                key: key.clone(),
                fault: None,
                failed: n <= failures,
            });
            if n <= failures {
                (503, Some(json!({"error": "lookup backend busy"})))
            } else {
                match st.users.get(&user) {
                    Some(status) => (
                        200,
                        Some(
                            json!({"id": format!("id-{user}"), "userName": user, "status": status}),
                        ),
                    ),
                    None => (404, Some(json!({"error": "no such user"}))),
                }
            }
        };
        respond(&mut sock, answer.0, answer.1).await;
        return;
    }

    let Some((action, user)) = mutation(&req) else {
        respond(&mut sock, 400, Some(json!({"error": "not understood"}))).await;
        return;
    };
    let (fault, result) = {
        let mut st = state.lock().unwrap();
        st.key_job
            .entry(key.clone())
            .or_insert_with(|| (user.clone(), action.clone()));
        let n = st.mutations_per_key.entry(key.clone()).or_default();
        let attempt = *n;
        *n += 1;
        let fault = plan(username_index(&user), &action)
            .faults
            .get(attempt)
            .copied();
        st.requests.push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            key: key.clone(),
            fault,
            failed: fault.is_some(),
        });
        let result = match fault {
            Some(f) if !f.applies() => None,
            _ => Some(apply(&mut st, &action, &user, &key)),
        };
        (fault, result)
    };
    match fault {
        None => match result.expect("applied") {
            Ok(()) => match action.as_str() {
                "create" => {
                    let body = json!({"id": format!("id-{user}"), "userName": user});
                    respond(&mut sock, 201, Some(body)).await
                }
                "terminate" => respond(&mut sock, 204, None).await,
                _ => respond(&mut sock, 200, Some(json!({"userName": user}))).await,
            },
            Err(status) => respond(&mut sock, status, Some(json!({"error": "refused"}))).await,
        },
        Some(Fault::Busy) => {
            respond(&mut sock, 503, Some(json!({"error": "maintenance"}))).await;
        }
        Some(Fault::AppliedThenSilent) => {
            // Say nothing until the client gives up and closes (bounded, in case it never does).
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut rest)).await;
        }
        Some(Fault::AppliedThenReset) | Some(Fault::ResetBeforeApplying) => {
            // SO_LINGER 0: dropping the socket sends RST instead of FIN.
            let _ = sock.set_zero_linger();
            drop(sock);
        }
        Some(Fault::ClosedBeforeApplying) => {
            let _ = sock.shutdown().await;
        }
    }
}

fn server_settings(base_url: &str) -> Value {
    let user_url = "/users/{{ service.username }}";
    json!({
        "base_url": base_url,
        // Long enough that a healthy answer never times out on a loaded CI machine.
        "timeout_seconds": 3,
        "actions": {
            "create": {
                "method": "POST",
                "url": "/users",
                "body": {"userName": "{{ service.username }}"},
                "success": {"status": [201]},
                "errors": {"permanent": [409]},
            },
            "suspend": {"method": "PATCH", "url": user_url, "body": {"active": false}},
            "unsuspend": {"method": "PATCH", "url": user_url, "body": {"active": true}},
            // 404 is not a success: a second delete would fail the job, not hide.
            "terminate": {"method": "DELETE", "url": user_url, "success": {"status": [204]}},
            "lookup": {
                "method": "GET",
                "url": user_url,
                "account": {"username": "/userName", "status": "/status"},
            },
        },
    })
}

/// The actions queued for user `i` after its create, in order: half are suspended, a
/// quarter unsuspended, a third terminated.
fn later_actions(i: usize) -> &'static [&'static str] {
    match i % 12 {
        0 => &["suspend", "unsuspend", "terminate"],
        4 | 8 => &["suspend", "unsuspend"],
        6 => &["suspend", "terminate"],
        2 | 10 => &["suspend"],
        3 | 9 => &["terminate"],
        _ => &[],
    }
}

fn expected_status(i: usize) -> &'static str {
    match later_actions(i).last() {
        Some(&"terminate") => "terminated",
        Some(&"suspend") => "suspended",
        _ => "active",
    }
}

/// Lists every job (there are fewer than 1000).
async fn all_jobs(app: &TestApp) -> Vec<Value> {
    let (status, list) = app.get("/v1/jobs?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list["next"].is_null(), "more than one page of jobs: {list}");
    list["items"].as_array().unwrap().clone()
}

async fn http_actions_complete_exactly_once_against_a_remote_that_fails_a_third(db: Db) {
    let started = Instant::now();
    let remote = Remote::start().await;
    let app = spawn_app_with(db, JOBS).await;
    let client = app
        .create("/v1/clients", json!({"name": "F", "email": "f@f.test"}))
        .await;
    // The server's settings pass the module's checks (201).
    app.create(
        "/v1/servers",
        json!({"name": "users-api", "module": "http", "max_concurrent": 20,
               "settings": server_settings(&remote.base_url)}),
    )
    .await;
    app.create("/v1/products", json!({"name": "saas", "module": "http"}))
        .await;

    // Order every service, and queue its later actions right away: each runs after the
    // previous one of its service, whatever failures delay that one.
    let mut service_user: HashMap<i64, usize> = HashMap::new();
    for i in 0..USERS {
        let svc = app
            .create(
                "/v1/services",
                json!({"client_id": client["id"], "product": "saas", "username": format!("f{i:02}")}),
            )
            .await;
        let id = svc["id"].as_i64().unwrap();
        service_user.insert(id, i);
        for &action in later_actions(i) {
            let (status, job) = app
                .post(&format!("/v1/services/{id}/{action}"), json!({}))
                .await;
            assert!(
                status == StatusCode::ACCEPTED || status == StatusCode::OK,
                "{action} f{i:02}: {status} {job}"
            );
        }
    }
    let expected_jobs: usize = (0..USERS).map(|i| 1 + later_actions(i).len()).sum();

    // Bounded wait for the queue to drain.
    let deadline = Instant::now() + Duration::from_secs(45);
    let jobs = loop {
        let jobs = all_jobs(&app).await;
        let open: Vec<&Value> = jobs
            .iter()
            .filter(|j| matches!(j["state"].as_str(), Some("pending" | "running")))
            .collect();
        if open.is_empty() {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs still open after 45 s, e.g. {}",
            open.len(),
            jobs.len(),
            open[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(jobs.len(), expected_jobs);

    // Every job is done, with exactly the history its faults call for.
    let mut histories: BTreeMap<Vec<&'static str>, usize> = BTreeMap::new();
    for job in &jobs {
        let id = job["id"].as_i64().unwrap();
        let (_, detail) = app.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(detail["state"], "done", "{detail}");
        let i = service_user[&job["service_id"].as_i64().unwrap()];
        let action = job["action"].as_str().unwrap();
        let want = expected_history(&plan(i, action));
        let history = detail["history"].as_array().unwrap();
        let outcomes: Vec<&str> = history
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        let want_outcomes: Vec<&'static str> = want.iter().map(|(o, _)| *o).collect();
        assert_eq!(outcomes, want_outcomes, "{action} of f{i:02}: {detail}");
        for (attempt, (_, fragment)) in history.iter().zip(&want) {
            let message = attempt["message"].as_str().unwrap_or("");
            assert!(
                message.contains(fragment),
                "{action} of f{i:02}: expected '{fragment}' in {attempt}"
            );
        }
        *histories.entry(want_outcomes).or_default() += 1;
    }
    // The interesting histories all happened: retried after a 503, skipped after a lookup
    // found the lost effect, sent again after a lookup found none, and a failed lookup.
    for h in [
        vec!["transient", "ok"],
        vec!["unknown", "skipped"],
        vec!["unknown", "ok"],
        vec!["unknown", "unknown", "skipped"],
        vec!["transient", "unknown", "ok"],
    ] {
        assert!(
            histories.contains_key(&h),
            "no job with history {h:?}: {histories:?}"
        );
    }

    // Every service ends where its actions lead.
    for (&id, &i) in &service_user {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(s["status"], expected_status(i), "f{i:02}: {s}");
    }

    // The remote applied each job's effect exactly once, in the order asked for.
    let job_keys: HashMap<String, (usize, String)> = jobs
        .iter()
        .map(|j| {
            (
                j["idempotency_key"].as_str().unwrap().to_string(),
                (
                    service_user[&j["service_id"].as_i64().unwrap()],
                    j["action"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    remote.with(|st| {
        assert!(st.refused.is_empty(), "sent twice: {:?}", st.refused);
        let mut per_key: HashMap<&str, usize> = HashMap::new();
        for (action, user, key) in &st.applied {
            *per_key.entry(key.as_str()).or_default() += 1;
            let (i, job_action) = job_keys
                .get(key)
                .unwrap_or_else(|| panic!("effect {action} {user} of no job ({key})"));
            assert_eq!((action, user), (job_action, &format!("f{i:02}")));
        }
        for (key, (i, action)) in &job_keys {
            assert_eq!(
                per_key.get(key.as_str()).copied().unwrap_or(0),
                1,
                "{action} of f{i:02} applied once"
            );
        }
        for i in 0..USERS {
            let user = format!("f{i:02}");
            let order: Vec<&str> = st
                .applied
                .iter()
                .filter(|(_, u, _)| *u == user)
                .map(|(a, _, _)| a.as_str())
                .collect();
            let mut want = vec!["create"];
            want.extend_from_slice(later_actions(i));
            assert_eq!(order, want, "{user}");
            let status = st
                .users
                .get(&user)
                .map(String::as_str)
                .unwrap_or("terminated");
            assert_eq!(status, expected_status(i), "{user} on the remote");
        }

        // After every unknown outcome, the remote was asked about the account (GET with
        // the job's key) before anything else was sent for that job.
        let mut unknown = 0;
        for (n, seen) in st.requests.iter().enumerate() {
            if !seen.fault.is_some_and(Fault::unknown) {
                continue;
            }
            unknown += 1;
            let next = st.requests[n + 1..]
                .iter()
                .find(|r| r.key == seen.key)
                .unwrap_or_else(|| panic!("nothing followed {seen:?}"));
            assert_eq!(next.method, "GET", "after {seen:?} came {next:?}");
            assert!(next.path.starts_with("/users/"), "{next:?}");
        }
        assert!(unknown > 0);

        // About a third of all requests failed.
        let failed = st.requests.iter().filter(|r| r.failed).count();
        let total = st.requests.len();
        eprintln!(
            "faults: {failed} of {total} requests failed; {} jobs; histories {histories:?}; {:?}",
            jobs.len(),
            started.elapsed()
        );
        assert!(
            failed * 4 >= total && failed * 2 <= total,
            "{failed} of {total} requests failed"
        );
    });
    app.stop().await;
}

/// When a create's answer is lost and the lookup before the retry finds the account, the
/// job is `skipped`, and the outputs the lookup returned are kept: later actions need them
/// (with docs/modules/http.md's setup, `url = "/users/{{ service.outputs.user_id }}"`).
async fn outputs_survive_a_create_that_was_skipped_after_a_lookup(db: Db) {
    let remote = Remote::start().await;
    let app = spawn_app_with(db, JOBS).await;
    let client = app
        .create("/v1/clients", json!({"name": "O", "email": "o@o.test"}))
        .await;
    let mut settings = server_settings(&remote.base_url);
    let actions = &mut settings["actions"];
    actions["create"]["outputs"] = json!({"remote_id": "/id"});
    actions["lookup"]["outputs"] = json!({"remote_id": "/id"});
    actions["suspend"]["url"] = json!("/users/{{ service.outputs.remote_id }}");
    app.create(
        "/v1/servers",
        json!({"name": "users-api", "module": "http", "settings": settings}),
    )
    .await;
    app.create("/v1/products", json!({"name": "saas", "module": "http"}))
        .await;
    // f00's create has no fault; f14's is applied and then its connection is reset.
    assert!(plan(0, "create").faults.is_empty());
    assert_eq!(plan(14, "create").faults, [Fault::AppliedThenReset]);
    assert!(plan(14, "suspend").faults.is_empty());
    for i in [0, 14] {
        let svc = app
            .create(
                "/v1/services",
                json!({"client_id": client["id"], "product": "saas", "username": format!("f{i:02}")}),
            )
            .await;
        let id = svc["id"].as_i64().unwrap();
        let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
        let create = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
        assert_eq!(create["state"], "done", "{create}");
        let job = app.act(id, "suspend", None).await;
        assert_eq!(job["state"], "done", "f{i:02}: {job}");
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(
            s["outputs"]["remote_id"],
            format!("id-f{i:02}"),
            "f{i:02}: {s}"
        );
    }
    app.stop().await;
}

on_both!(
    http_actions_complete_exactly_once_against_a_remote_that_fails_a_third,
    outputs_survive_a_create_that_was_skipped_after_a_lookup,
);
