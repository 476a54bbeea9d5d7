//! The chaos run of `provisio-bench chaos`, small: two `provisio serve` processes of this
//! binary on one PostgreSQL database, a remote failing a third of its calls, a few hundred
//! actions, and four kills (SIGKILL or SIGTERM) with restarts. Nothing doubled, nothing
//! lost, every output and event there, no job left open. A delivery claimed by an engine
//! that was SIGKILLed waits out its lease (3 s here, renewed while an engine lives) before
//! another sends it, so the drain is short.

use std::time::{Duration, Instant};

use provisio_bench::chaos::{run, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_engines_double_nothing_and_lose_nothing() {
    let Ok(pg_url) = std::env::var("PROVISIO_TEST_PG_URL") else {
        eprintln!("skipped: PROVISIO_TEST_PG_URL is not set (scripts/test starts a PostgreSQL and sets it)");
        return;
    };
    let t0 = Instant::now();
    let report = run(&Options {
        actions: 400,
        rate: 40.0,
        concurrency: 32,
        kill_every: Duration::from_secs(3),
        min_kills: 4,
        sigkill_share: 0.5,
        seed: 7,
        pg_url,
        provisio_bin: env!("CARGO_BIN_EXE_provisio").into(),
        max_rss_mib: 512.0,
        drain_limit: Duration::from_secs(90),
        slow: Duration::from_secs(1),
        dir: None,
    })
    .await
    .expect("the chaos run could be carried out");
    eprint!("{report}");
    eprintln!("chaos test took {:.1} s", t0.elapsed().as_secs_f64());
    assert!(report.failures.is_empty(), "{report}");
    let f = &report.figures;
    for zero in [
        "doubled",
        "lost",
        "missing_outputs",
        "undelivered",
        "open_jobs",
    ] {
        assert_eq!(f[zero], 0, "{zero}: {report}");
    }
    assert!(f["requested"] >= 400 && f["kills"] >= 4, "{report}");
    assert!(
        f["done_once"] + f["failed_with_reason"] == f["requested"],
        "{report}"
    );
}
