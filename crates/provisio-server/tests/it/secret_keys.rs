//! Secret keys at start-up and in rotation: a node with another key is refused whatever
//! kind of secret the database holds, a key file others may read is refused, and every
//! secret (servers, products, services, handlers, job parameters) is re-sealed under a new
//! key by two nodes' worth of running actions, after which the old key is not needed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisio_core::job::JobState;
use provisio_core::module::Action;
use provisio_core::secret::{Cipher, KeyId, Sealed};
use provisio_core::ServiceId;
use provisio_engine::input::{ClientCreate, ProductCreate, RecordRef, ServerCreate, ServiceCreate};
use provisio_engine::secret_keys::{self, RotateOptions};
use provisio_engine::{ActionInput, Engine, HandlerCreate};
use provisio_server::StartError;
use provisio_store::{SealedCell, SealedColumn, SecretKeyState, Store};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::helpers::{config, db_url, registry, Db};

const JOBS: &str =
    "[jobs]\nretry_schedule = [\"100ms\", \"100ms\", \"100ms\"]\nretry_jitter = 0.0\n\
lease_seconds = 30\npoll_interval_ms = 20\n";

const SERVERS: usize = 20;
const PRODUCTS: usize = 60;
const HANDLERS: usize = 60;
/// Services with an action loop running on them during the rotation.
const LIVE: usize = 20;
const SERVICES: usize = 800;

fn input<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

async fn start(cfg: &provisio_server::Config) -> Result<Engine, StartError> {
    provisio_server::prepare(cfg, registry()).await
}

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("secret.key")
}

/// Every sealed value the database holds, by column, read the way the rotation reads them.
async fn every_sealed(store: &dyn Store) -> Vec<(SealedColumn, Sealed)> {
    let mut out = Vec::new();
    for column in SealedColumn::ALL {
        let mut after = 0;
        loop {
            let cells = store.sealed_cells(column, &[], after, 500).await.unwrap();
            let Some((last, _)) = cells.last() else { break };
            after = *last;
            for (_, cell) in cells {
                match cell {
                    SealedCell::Bytes(b) => out.push((column, Sealed(b))),
                    SealedCell::Json(t) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        out.extend(
                            provisio_core::secret::sealed_in(&v)
                                .into_iter()
                                .map(|s| (column, s)),
                        );
                    }
                }
            }
        }
    }
    out
}

/// The plaintexts the test gave, to compare with what the database opens to afterwards.
#[derive(Default)]
struct Expected {
    passwords: HashMap<ServiceId, String>,
    tokens: HashMap<String, String>,
    product_secrets: HashMap<String, String>,
    handler_secrets: HashMap<String, String>,
}

async fn populate(engine: &Engine) -> (Vec<ServiceId>, Expected) {
    let mut want = Expected::default();
    let client = engine
        .create_client(input::<ClientCreate>(
            json!({"name": "Keys", "email": "keys@k.test"}),
        ))
        .await
        .unwrap();
    for i in 0..SERVERS {
        let token = format!("srv-token-{i}-a91f");
        engine
            .create_server(input::<ServerCreate>(json!({
                "name": format!("rec-{i}"), "module": "recorder", "max_concurrent": 50,
                // `api_key` is not declared: sealed because of its name.
                "settings": {"token": token, "api_key": format!("srv-apikey-{i}-77c2"), "region": "eu"},
            })))
            .await
            .unwrap();
        want.tokens.insert(format!("rec-{i}"), token);
    }
    for i in 0..PRODUCTS {
        let secret = format!("prod-secret-{i}-3b8d");
        engine
            .create_product(input::<ProductCreate>(json!({
                "name": format!("plan-{i}"), "module": "recorder",
                "auto_setup": if i == 0 { "on_order" } else { "manual" },
                "settings": {"client_secret": secret, "quota": i},
            })))
            .await
            .unwrap();
        want.product_secrets.insert(format!("plan-{i}"), secret);
    }
    for i in 0..HANDLERS {
        let h = engine
            .create_handler(input::<HandlerCreate>(json!({
                "name": format!("hook-{i}"), "kind": "http", "url": "http://127.0.0.1:9/never",
                "events": ["client.deleted"], "phase": "notify",
            })))
            .await
            .unwrap();
        want.handler_secrets.insert(
            format!("hook-{i}"),
            h.secret.unwrap().expose_secret().to_string(),
        );
    }
    let mut live = Vec::new();
    for i in 0..SERVICES {
        let password = format!("svc-pw-{i}-c4e0");
        // The first few go on the product that sets up on order, so they become active
        // and take actions; the rest wait on manual products.
        let product = if i < LIVE {
            "plan-0".to_string()
        } else {
            format!("plan-{}", 1 + i % (PRODUCTS - 1))
        };
        let s = engine
            .create_service(input::<ServiceCreate>(json!({
                "client_id": client.id.0, "product": product,
                "username": format!("u{i:04}"), "password": password,
                "settings": if i % 2 == 0 { json!({"db_password": format!("svc-db-{i}")}) } else { json!({}) },
            })))
            .await
            .unwrap();
        want.passwords.insert(s.id, password);
        if i < LIVE {
            live.push(s.id);
        }
    }
    (live, want)
}

async fn wait_active(engine: &Engine, ids: &[ServiceId]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let s = engine.get_service(*id).await.unwrap();
            if s.status == provisio_core::service::ServiceStatus::Active {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "service {id:?} never became active"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Suspends, unsuspends and changes passwords of `live` on both nodes, and edits server
/// settings and rotates handler signing secrets (read-modify-write of sealed columns),
/// until `stop`; every action must end `done`. Returns how many actions ran.
async fn act(
    nodes: [Arc<Engine>; 2],
    live: Vec<ServiceId>,
    want: Arc<Mutex<Expected>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut actions = 0;
    let mut round = 0usize;
    // At least two rounds, however quickly the rotation ends on a busy machine: they
    // start before it and go on through it.
    while !stop.load(Ordering::Relaxed) || round < 2 {
        round += 1;
        let node = &nodes[round % 2];
        let mut jobs = Vec::new();
        for (n, id) in live.iter().enumerate() {
            let (action, password) = match round % 3 {
                0 => (
                    Action::ChangePassword,
                    Some(format!("new-pw-{round}-{n}-e2")),
                ),
                1 => (Action::Suspend, None),
                _ => (Action::Unsuspend, None),
            };
            let job = node
                .request_action(
                    *id,
                    action,
                    ActionInput {
                        password: password.clone().map(|p| SecretString::from(p).into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("requesting round {round} on {id:?}: {e}"));
            if let Some(p) = password {
                want.lock().unwrap().passwords.insert(*id, p);
            }
            jobs.push(job.id);
        }
        let done = node
            .wait_for_jobs(&jobs, Duration::from_secs(30))
            .await
            .unwrap();
        for id in &jobs {
            let job = &done[id];
            assert_eq!(job.state, JobState::Done, "round {round}: {job:?}");
        }
        actions += jobs.len();
        // Writes that read sealed columns and write them back whole.
        let server = format!("rec-{}", round % SERVERS);
        let token = format!("srv-token-{server}-r{round}");
        node.update_server(
            &RecordRef::Name(server.clone()),
            input(json!({"settings": {"token": token}})),
        )
        .await
        .unwrap();
        want.lock().unwrap().tokens.insert(server, token);
        let hook = format!("hook-{}", round % HANDLERS);
        let rotated = node
            .rotate_handler_secret(&RecordRef::Name(hook.clone()))
            .await
            .unwrap();
        want.lock()
            .unwrap()
            .handler_secrets
            .insert(hook, rotated.secret.unwrap().expose_secret().to_string());
    }
    actions
}

/// What the database opens to under `cipher` must be what the test put in.
async fn check_plaintexts(engine: &Engine, want: &Expected) {
    for (id, pw) in &want.passwords {
        assert_eq!(
            engine.reveal_password(*id).await.unwrap().expose_secret(),
            pw
        );
    }
    let store = engine.store();
    for (name, token) in &want.tokens {
        let s = store.get_server_by_name(name).await.unwrap().unwrap();
        let open = engine.cipher().open_settings(&s.settings).unwrap();
        assert_eq!(open["token"], json!(token), "{name}");
    }
    for (name, secret) in &want.product_secrets {
        let p = store.get_product_by_name(name).await.unwrap().unwrap();
        let open = engine.cipher().open_settings(&p.settings).unwrap();
        assert_eq!(open["client_secret"], json!(secret), "{name}");
    }
    for (name, secret) in &want.handler_secrets {
        let h = engine
            .find_handler(&RecordRef::Name(name.clone()))
            .await
            .unwrap();
        let open = engine.cipher().open(h.secret.as_ref().unwrap()).unwrap();
        assert_eq!(open.expose_secret(), secret, "{name}");
    }
}

async fn secrets_are_resealed_under_a_new_key_while_actions_run(db: Db) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let cfg = config(dir.path(), &url, JOBS);
    let first = Arc::new(start(&cfg).await.unwrap());
    let old = first.cipher().sealing_key();
    let worker = provisio_engine::worker::spawn(first.clone(), "first".into());
    let (live, want) = populate(&first).await;
    wait_active(&first, &live).await;
    worker.shutdown().await;
    let populated = started.elapsed();

    // The new key goes into the key file beside the old one, and the nodes restart.
    let new_key = Cipher::generate_key();
    let new = Cipher::new(&new_key).sealing_key();
    let old_text = std::fs::read_to_string(key_file(dir.path())).unwrap();
    std::fs::write(
        key_file(dir.path()),
        format!(
            "{}\n{old_text}",
            Cipher::format_key(&new_key).expose_secret()
        ),
    )
    .unwrap();
    let nodes = [
        Arc::new(start(&cfg).await.unwrap()),
        Arc::new(start(&cfg).await.unwrap()),
    ];
    for n in &nodes {
        assert_eq!(
            n.cipher().sealing_key(),
            old,
            "the database decides which key seals"
        );
    }
    let workers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| provisio_engine::worker::spawn(n.clone(), format!("node-{i}")))
        .collect();
    let want = Arc::new(Mutex::new(want));
    let stop = Arc::new(AtomicBool::new(false));
    let acting = tokio::spawn(act(nodes.clone(), live.clone(), want.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The rotation, as `provisio key rotate-secret-key` runs it: its own store and key ring.
    let before = every_sealed(first.store().as_ref()).await;
    assert!(before.len() >= 1000, "only {} sealed values", before.len());
    assert!(before.iter().all(|(_, s)| s.key_id() == Some(old)));
    let rotating = Instant::now();
    let store = provisio_store::open(&url).await.unwrap();
    let keys = provisio_server::load_key_ring(&cfg).unwrap().unwrap();
    let ring = Cipher::with_keys(&keys).unwrap();
    let options = RotateOptions {
        batch: 100,
        settle: secret_keys::FOLLOW_EVERY * 2,
        max_passes: 20,
    };
    let rotation = secret_keys::rotate(store.as_ref(), &ring, new, &options, &|m| eprintln!("{m}"))
        .await
        .unwrap();
    let rotated_in = rotating.elapsed();
    stop.store(true, Ordering::Relaxed);
    let actions = acting.await.unwrap();
    for w in workers {
        w.shutdown().await;
    }
    assert!(
        actions >= 2 * LIVE,
        "only {actions} actions ran during the rotation"
    );
    assert_eq!(rotation.retired, [old.to_string()]);
    assert!(rotation.resealed as usize >= SERVERS + PRODUCTS + HANDLERS + SERVICES);
    for n in &nodes {
        assert_eq!(
            n.cipher().sealing_key(),
            new,
            "the nodes followed the rotation"
        );
    }

    // Nothing in the database is sealed under the old key.
    let after = every_sealed(store.as_ref()).await;
    let stale: Vec<_> = after
        .iter()
        .filter(|(_, s)| s.key_id() != Some(new))
        .map(|(c, _)| c.to_string())
        .collect();
    assert!(stale.is_empty(), "still under another key: {stale:?}");
    let states: Vec<_> = store
        .secret_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (KeyId::parse(&k.kid).unwrap(), k.state))
        .collect();
    assert_eq!(
        states,
        [
            (new, SecretKeyState::Current),
            (old, SecretKeyState::Retired)
        ]
    );
    // Run again, the rotation finds nothing to do.
    let again = secret_keys::rotate(store.as_ref(), &ring, new, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!((again.resealed, again.passes), (0, 1));
    store.close().await;

    // The old key leaves the key file: a node starts and opens every secret without it.
    std::fs::write(
        key_file(dir.path()),
        format!("{}\n", Cipher::format_key(&new_key).expose_secret()),
    )
    .unwrap();
    let last = Arc::new(start(&cfg).await.unwrap());
    assert_eq!(last.cipher().key_ids(), [new]);
    let want = std::mem::take(&mut *want.lock().unwrap());
    check_plaintexts(&last, &want).await;
    let worker = provisio_engine::worker::spawn(last.clone(), "last".into());
    let job = last
        .request_action(live[0], Action::ChangePassword, ActionInput::default())
        .await
        .unwrap();
    let job = last
        .wait_for_job(job.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Done, "{job:?}");
    worker.shutdown().await;
    eprintln!(
        "{db:?}: {} sealed values in {} cells re-sealed in {:?} ({} passes) while {actions} actions ran; set-up {populated:?}",
        after.len(),
        rotation.resealed,
        rotated_in,
        rotation.passes
    );
}

/// A second node given its own key file is refused, on a database that holds only a
/// handler's signing secret or only a product's undeclared credential, both before key
/// records existed (a database from before key ids) and after.
async fn a_node_with_another_key_is_refused(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let cfg = config(dir.path(), &url, "");
    let first = start(&cfg).await.unwrap();
    first
        .create_handler(input::<HandlerCreate>(json!({
            "name": "hook", "kind": "http", "url": "http://127.0.0.1:9/",
            "events": ["client.deleted"], "phase": "notify",
        })))
        .await
        .unwrap();
    let first_key = std::fs::read_to_string(key_file(dir.path())).unwrap();
    first.store().close().await;

    // Without a key file the other node does not make one up: the database holds secrets.
    let other = tempfile::tempdir().unwrap();
    let other_cfg = config(other.path(), &url, "");
    let text = start(&other_cfg)
        .await
        .err()
        .expect("no key file")
        .to_string();
    assert!(
        text.contains("is missing but the database already holds"),
        "{text}"
    );
    write_private(
        &key_file(other.path()),
        Cipher::format_key(&Cipher::generate_key()).expose_secret(),
    );
    let refused = |e: StartError| {
        let text = e.to_string();
        let other_key = std::fs::read_to_string(key_file(other.path())).unwrap_or_default();
        for key in [first_key.trim(), other_key.trim()] {
            assert!(
                key.is_empty() || !text.contains(key),
                "the key is in: {text}"
            );
        }
        text
    };
    // The other node brings its own key; the database knows the first one.
    let text = refused(
        start(&other_cfg)
            .await
            .err()
            .expect("another key must be refused"),
    );
    assert!(text.contains("sealed under secret key"), "{text}");
    assert!(text.contains("another key"), "{text}");

    // Without the key records (as before key ids), the handler's secret alone decides.
    forget_key_records(db, &url).await;
    let text = refused(
        start(&other_cfg)
            .await
            .err()
            .expect("another key must be refused"),
    );
    assert!(text.contains("handlers.secret"), "{text}");
    // The right key passes, and records itself again.
    let again = start(&cfg).await.unwrap();
    assert_eq!(again.store().secret_keys().await.unwrap().len(), 1);
    again
        .create_product(input::<ProductCreate>(
            json!({"name": "p", "module": "recorder", "settings": {"auth_token": "t-9"}}),
        ))
        .await
        .unwrap();
    again
        .delete_handler(&RecordRef::Name("hook".into()))
        .await
        .unwrap();
    again.store().close().await;
    forget_key_records(db, &url).await;
    let text = refused(
        start(&other_cfg)
            .await
            .err()
            .expect("another key must be refused"),
    );
    assert!(text.contains("products.settings"), "{text}");
}

fn write_private(path: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
}

async fn forget_key_records(db: Db, url: &str) {
    use sqlx::Connection;
    match db {
        Db::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("DELETE FROM secret_keys")
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        Db::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("DELETE FROM secret_keys")
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
    }
}

/// A key file others may read is refused with the fix in the message; the file written on
/// first start is private.
async fn a_key_file_others_can_read_is_refused(db: Db) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let cfg = config(dir.path(), &url, "");
    start(&cfg).await.unwrap().store().close().await;
    let path = key_file(dir.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    for loose in [0o644, 0o640, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let text = start(&cfg)
            .await
            .err()
            .expect("a readable key file must be refused")
            .to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );
        assert!(text.contains(&format!("{loose:04o}")), "{text}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    start(&cfg).await.unwrap().store().close().await;
}

/// A node started before the new key reached its key file keeps sealing under the old key:
/// the rotation stops with a message naming the cause instead of retiring a key still in
/// use, and once the node has both keys a second run finishes.
async fn a_rotation_waits_for_a_node_without_the_new_key(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let cfg = config(dir.path(), &url, "");
    let lagging = Arc::new(start(&cfg).await.unwrap());
    let old = lagging.cipher().sealing_key();
    lagging
        .create_handler(input::<HandlerCreate>(json!({
            "name": "hook", "kind": "http", "url": "http://127.0.0.1:9/",
            "events": ["client.deleted"], "phase": "notify",
        })))
        .await
        .unwrap();
    let follow = secret_keys::spawn_follow(lagging.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let sealing = {
        let (node, stop) = (lagging.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                node.rotate_handler_secret(&RecordRef::Name("hook".into()))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let new_key = Cipher::generate_key();
    let new = Cipher::new(&new_key).sealing_key();
    let old_text = std::fs::read_to_string(key_file(dir.path())).unwrap();
    let both = format!(
        "{}\n{old_text}",
        Cipher::format_key(&new_key).expose_secret()
    );
    std::fs::write(key_file(dir.path()), &both).unwrap();
    let ring = Cipher::with_keys(&provisio_server::load_key_ring(&cfg).unwrap().unwrap()).unwrap();
    // A rotation ends only after a settle time with nothing found: longer than one of
    // the lagging node's writes can take on a busy machine.
    let options = RotateOptions {
        batch: 50,
        settle: Duration::from_millis(1000),
        max_passes: 5,
    };
    let store = provisio_store::open(&url).await.unwrap();
    let err = secret_keys::rotate(store.as_ref(), &ring, new, &options, &|_| {})
        .await
        .expect_err("a node sealing under the old key must stop the rotation");
    assert!(
        err.to_string().contains(&format!("lacks key {new}")),
        "{err}"
    );
    assert_eq!(lagging.cipher().sealing_key(), old, "it cannot follow");
    let states: Vec<_> = store
        .secret_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.state)
        .collect();
    assert_eq!(states, [SecretKeyState::Current, SecretKeyState::Retiring]);
    // The node restarts with both keys: it must, since a rotation is under way.
    stop.store(true, Ordering::Relaxed);
    sealing.await.unwrap();
    follow.abort();
    std::fs::write(key_file(dir.path()), &old_text).unwrap();
    let text = start(&cfg)
        .await
        .err()
        .expect("the new key is current now")
        .to_string();
    assert!(
        text.contains(&format!("sealed under secret key {new}")),
        "{text}"
    );
    std::fs::write(key_file(dir.path()), &both).unwrap();
    let restarted = start(&cfg).await.unwrap();
    assert_eq!(restarted.cipher().sealing_key(), new);
    let done = secret_keys::rotate(store.as_ref(), &ring, new, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(done.retired, [old.to_string()]);
    let stale = every_sealed(store.as_ref())
        .await
        .into_iter()
        .filter(|(_, s)| s.key_id() != Some(new))
        .count();
    assert_eq!(stale, 0);
}

on_both!(
    secrets_are_resealed_under_a_new_key_while_actions_run,
    a_rotation_waits_for_a_node_without_the_new_key,
    a_node_with_another_key_is_refused,
    a_key_file_others_can_read_is_refused,
);
