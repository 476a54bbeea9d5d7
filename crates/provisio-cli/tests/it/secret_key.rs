//! `provisio key rotate-secret-key` with the real binary: a new key added to the key file,
//! `serve` restarted with both, every secret re-sealed while it runs, then `serve` restarted
//! with the new key alone.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::{serve, spawn_serve, BIN};

fn key_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_secret_key_rotates_under_a_running_serve_and_the_old_key_can_go() {
    let mut s = serve(&[]);
    let dir = s.dir.path().to_path_buf();
    let rotate = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["key", "rotate-secret-key"])
            .args(args)
            .current_dir(&dir)
            .env_remove("PROVISIO_DATABASE_URL")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "rotate-secret-key {args:?}: {text}");
        text
    };
    let client = s.json(&["client", "add", "--name", "K", "--email", "k@k.example"]);
    s.ok(&["server", "add", "box", "--module", "noop"]);
    let product = s.json(&[
        "product",
        "add",
        "p",
        "--module",
        "noop",
        "--set",
        "api_token=tok-rot-81f",
    ]);
    assert_eq!(
        product["secrets"],
        serde_json::json!(["api_token"]),
        "{product}"
    );
    let out = s.cli(
        &[
            "service",
            "add",
            "--client",
            &client["id"].to_string(),
            "--product",
            "p",
            "--username",
            "rot1",
            "--password-stdin",
            "-o",
            "json",
        ],
        Some("Rot-Password-5d\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let service: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = service["id"].to_string();

    // Nothing new yet: the command only checks.
    let text = rotate(&["--settle-seconds", "0"]);
    assert!(
        text.contains("no key the database does not use yet"),
        "{text}"
    );

    let file = dir.join("provisio.secret-key");
    let old = std::fs::read_to_string(&file).unwrap();
    let text = rotate(&["--generate"]);
    assert!(text.contains("added secret key"), "{text}");
    let both = std::fs::read_to_string(&file).unwrap();
    assert_eq!(key_lines(&both).len(), 2);
    assert!(key_lines(&both).contains(&old.trim()));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Restart with both keys, then rotate under the running serve.
    let _ = s.child.kill();
    let _ = s.child.wait();
    let (child, addr) = spawn_serve(&dir, &[], "serve-both.log");
    s.child = child;
    s.url = format!("http://{addr}");
    let text = rotate(&["--settle-seconds", "3"]);
    assert!(
        text.contains("every secret is now sealed under key"),
        "{text}"
    );
    assert!(text.contains("retired key"), "{text}");
    // An action after the rotation seals its new password under the new key.
    s.ok(&["service", "change-password", &id, "--wait", "10"]);
    let changed = s.ok(&["service", "password", &id]);
    assert_ne!(changed.trim(), "Rot-Password-5d");

    // The old key goes; serve starts with the new one alone and opens every secret.
    let new: Vec<&str> = key_lines(&both)
        .into_iter()
        .filter(|k| *k != old.trim())
        .collect();
    std::fs::write(&file, format!("{}\n", new[0])).unwrap();
    let _ = s.child.kill();
    let _ = s.child.wait();
    let (child, addr) = spawn_serve(&dir, &[], "serve-new.log");
    s.child = child;
    s.url = format!("http://{addr}");
    assert_eq!(s.ok(&["service", "password", &id]), changed);
    let shown = s.ok(&["product", "show", "p", "-o", "json"]);
    assert!(!shown.contains("tok-rot-81f"), "{shown}");
    s.ok(&["service", "suspend", &id, "--wait", "10"]);
}
