//! `provisio key rotate-secret-key`: adds a new secret key to the key file (`--generate`),
//! then re-seals every secret in the database under it while the nodes keep serving.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use provisio_core::secret::{Cipher, KeyId};
use provisio_engine::secret_keys::{self, RotateOptions, SecretKeyError};
use provisio_server::{Config, Overrides};
use secrecy::ExposeSecret;

#[derive(clap::Args, Debug, Clone)]
pub struct RotateArgs {
    /// Add a newly generated key to the key file and stop: copy the file to every node and
    /// restart them one by one, then run this command again without --generate.
    #[arg(long)]
    generate: bool,
    /// The key id to rotate to, when the key file holds several keys the database does not
    /// use yet.
    #[arg(long, value_name = "KEY_ID")]
    to: Option<String>,
    /// Secrets re-sealed per transaction.
    #[arg(long, default_value_t = 200)]
    batch: u32,
    /// Seconds after the switch by which every running node seals under the new key.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
}

/// Writes `contents` to `path` through a temporary file readable by its owner only, so the
/// key file is never seen half written.
fn replace_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    // A leftover from an interrupted run may have other permissions: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn generate(cfg: &Config) -> anyhow::Result<()> {
    if cfg.secret_key.is_some() {
        bail!("--generate adds a key to the key file, but this configuration takes its keys from secret_key (PROVISIO_SECRET_KEY); add a new key there yourself, one a line");
    }
    let path = &cfg.secret_key_file;
    if provisio_server::load_key_ring(cfg)?.is_none() {
        bail!(
            "the key file {} does not exist yet: `provisio serve` creates it on first start",
            path.display()
        );
    }
    let old = std::fs::read_to_string(path)?;
    let key = Cipher::generate_key();
    let id = Cipher::new(&key).sealing_key();
    let added = format!(
        "# added by `provisio key rotate-secret-key --generate` on {} (key id {id})\n{}\n{old}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        Cipher::format_key(&key).expose_secret(),
    );
    replace_private(path, &added)?;
    println!(
        "added secret key {id} to {}; copy this file to every node, restart them one by one, then run `provisio key rotate-secret-key`",
        path.display()
    );
    Ok(())
}

pub async fn run(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    args: RotateArgs,
) -> anyhow::Result<()> {
    let cfg = Config::load(
        file.as_deref(),
        &Overrides {
            listen: None,
            database_url: database_url.clone(),
        },
    )?;
    if args.generate {
        return generate(&cfg);
    }
    let Some(keys) = provisio_server::load_key_ring(&cfg)? else {
        bail!(
            "the key file {} does not exist",
            cfg.secret_key_file.display()
        );
    };
    let cipher = Cipher::with_keys(&keys).expect("at least one key was parsed");
    let url = provisio_store::redact_url(&cfg.database_url);
    let store = provisio_store::open(&cfg.database_url)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database {url}"))?;
    let refused = |e: SecretKeyError| anyhow::anyhow!("{e}");
    let found = secret_keys::check(store.as_ref(), &cipher)
        .await
        .map_err(refused)?;
    let to = match (&args.to, found.new.as_slice()) {
        (Some(t), _) => KeyId::parse(t)
            .with_context(|| format!("--to: {t:?} is not a key id (16 hex characters)"))?,
        // A rotation that was interrupted goes on to the key it had made current.
        (None, _) if !found.retiring.is_empty() => found.current,
        (None, [one]) => *one,
        // Nothing new: check that everything is under the current key (re-sealing any
        // straggler), which is also how a finished rotation is verified.
        (None, []) => {
            eprintln!(
                "the key file holds no key the database does not use yet (add one with --generate); checking that every secret is under the current key {}",
                found.current
            );
            found.current
        }
        (None, many) => bail!(
            "the key file holds several keys the database does not use yet ({}); name one with --to",
            many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let options = RotateOptions {
        batch: args.batch.max(1),
        settle: std::time::Duration::from_secs(args.settle_seconds),
        ..RotateOptions::default()
    };
    let done = secret_keys::rotate(store.as_ref(), &cipher, to, &options, &|m| eprintln!("{m}"))
        .await
        .map_err(refused)?;
    store.close().await;
    println!(
        "every secret is now sealed under key {to} ({} re-sealed in {} passes)",
        done.resealed, done.passes
    );
    if !done.retired.is_empty() {
        println!(
            "retired key {}: nothing is sealed under it any more; remove it from every node's key file",
            done.retired.join(", ")
        );
    }
    Ok(())
}
