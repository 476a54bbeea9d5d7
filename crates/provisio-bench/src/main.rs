//! The `provisio-bench` binary: measures the engine and prints figures rather than judging
//! them. Kept out of the shipped `provisio` binary, which so carries no test remote and
//! none of the libraries only the benches need.

mod accounts;
mod audit;
mod console;
mod group;
mod latency;
mod memory;
mod orders;
mod peers;
mod queue;
mod retention;
mod setup;
mod slow_remote;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use provisio_bench::chaos;

/// Measures Provisio's engine on throwaway databases and prints figures.
#[derive(Parser, Debug)]
#[command(name = "provisio-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Subcommand, Debug, Clone)]
enum BenchCmd {
    /// Actions through the queue with the no-op module.
    Queue {
        #[arg(long, default_value_t = 100_000)]
        actions: usize,
        /// Also run on this PostgreSQL (a database the bench may fill), with one and two engines.
        #[arg(long, env = "PROVISIO_BENCH_PG_URL")]
        postgres_url: Option<String>,
        /// Skip SQLite.
        #[arg(long)]
        no_sqlite: bool,
        /// `both`: the SQLite run without the metrics recorder, then with it installed
        /// (it cannot be removed again), and their difference; `on`: every run with it.
        #[arg(long, default_value = "off", value_parser = ["off", "on", "both"])]
        metrics: String,
    },
    /// Orders over HTTP (`POST /v1/services` and `/v1/services/batch`) and actions
    /// (suspend, unsuspend) from many connections, at several numbers of existing services.
    Orders {
        /// Existing services to measure at (filled through the store), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        at: Vec<usize>,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Single orders per measurement.
        #[arg(long, default_value_t = 5000)]
        orders: usize,
        /// Actions per measurement.
        #[arg(long, default_value_t = 4000)]
        actions: usize,
        /// Batch requests per measurement.
        #[arg(long, default_value_t = 10)]
        batches: usize,
        /// Orders per batch request (at most 1000).
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        #[arg(long, default_value_t = 4)]
        servers: usize,
        /// Run on a fresh database on this PostgreSQL instead of SQLite.
        #[arg(long, value_name = "URL")]
        pg: Option<String>,
    },
    /// The resident memory of an idle `provisio serve` (the real binary) over a SQLite
    /// database holding this many services, each with a finished job.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        services: usize,
        /// The `provisio` binary; by default the one beside this executable.
        #[arg(long)]
        provisio_bin: Option<PathBuf>,
        /// Idle means the resident size moved less than 1 MiB over this many seconds.
        #[arg(long, default_value_t = 10)]
        settle_secs: u64,
    },
    /// Actions against a slow local HTTP remote through the `http` module.
    Latency {
        #[arg(long, default_value_t = 4000)]
        actions: usize,
        /// The remote's delay per request, in milliseconds.
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        servers: usize,
        /// max_concurrent of each server.
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
    },
    /// A group suspend over many services of one invoice against a slow local remote.
    Group {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        servers: usize,
        #[arg(long, default_value_t = 10)]
        concurrency: u32,
    },
    /// A usage sync of many services across many servers against a local HTTP remote that
    /// serves usage pages after a delay.
    Usage {
        #[arg(long, default_value_t = 1_000_000)]
        services: usize,
        #[arg(long, default_value_t = 100)]
        servers: usize,
        /// Accounts per page.
        #[arg(long, default_value_t = 1000)]
        page_size: u32,
        /// The remote's delay per page, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// An audit of many remote accounts against as many local services, 1% drift of each kind.
    Audit {
        #[arg(long, default_value_t = 1_000_000)]
        accounts: usize,
        #[arg(long, default_value_t = 100)]
        servers: usize,
        #[arg(long, default_value_t = 1000)]
        page_size: u32,
    },
    /// The admin console's page times with 100,000 services and 1,000,000 jobs.
    Console {
        #[arg(long, default_value_t = 100_000)]
        services: usize,
        #[arg(long, default_value_t = 1_000_000)]
        jobs: usize,
        /// Requests timed per page.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Also on this PostgreSQL (a fresh database next to the one it names).
        #[arg(long, env = "PROVISIO_BENCH_PG_URL")]
        postgres_url: Option<String>,
        /// Skip SQLite.
        #[arg(long)]
        no_sqlite: bool,
        /// Keep the SQLite database in this directory (to look at its query plans after).
        #[arg(long)]
        keep_in: Option<std::path::PathBuf>,
    },
    /// Aged finished jobs, deliveries and rule runs trimmed by the maintenance turn while
    /// actions run, beside the action rate with no trimming on the same database.
    Retention {
        /// Aged rows of each kind (jobs, deliveries, rule runs; attempts besides).
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Services the actions run on, one action each per round.
        #[arg(long, default_value_t = 200)]
        services: usize,
        /// How long to measure the action rate with no trimming.
        #[arg(long, default_value_t = 10)]
        baseline_secs: u64,
        /// Also run on this PostgreSQL (a database the bench may create databases in).
        #[arg(long, value_name = "URL")]
        pg: Option<String>,
    },
    /// Two `provisio serve` processes on one PostgreSQL database against a remote that fails
    /// a third of its calls, while a driver runs thousands of actions and one engine is
    /// killed (SIGKILL or SIGTERM) and restarted every few seconds; then checks that every
    /// action was done exactly once or failed with a reason, outputs are present, every
    /// event was delivered, no job is left open and memory stayed bounded. Exits non-zero
    /// when any of that does not hold.
    Chaos {
        /// Actions to request at least (services are added until their lives hold as many).
        #[arg(long, default_value_t = 5000)]
        actions: usize,
        /// Actions requested per second.
        #[arg(long, default_value_t = 40.0)]
        rate: f64,
        /// Services whose lives run at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Mean seconds between kills (each wait is 0.5 to 1.5 times this).
        #[arg(long, default_value_t = 5.0)]
        kill_every: f64,
        /// Kills at least (the killer goes on after the driver until there were as many).
        #[arg(long, default_value_t = 10)]
        min_kills: usize,
        /// Share of kills that are SIGKILL; the others are SIGTERM.
        #[arg(long, default_value_t = 0.5)]
        sigkill_share: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A PostgreSQL server URL; the run creates a fresh database on it.
        #[arg(long, env = "PROVISIO_BENCH_PG_URL")]
        postgres_url: String,
        /// The `provisio` binary; by default the one beside this executable.
        #[arg(long)]
        provisio_bin: Option<PathBuf>,
        /// Peak resident memory (VmHWM) any engine process may reach, in MiB.
        #[arg(long, default_value_t = 512.0)]
        max_rss_mib: f64,
        /// Seconds the queue and deliveries may take to drain after the last kill; a
        /// delivery claimed by a killed engine waits out its lease (3 s in the run's config).
        #[arg(long, default_value_t = 120)]
        drain_seconds: u64,
        /// Keep the engines' config and logs in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Provisio's PostgreSQL queue beside graphile-worker on the same cluster (same job
    /// count and concurrency, plain and batched), and the latency-bound runs against their
    /// limit. `scripts/bench-peers` starts a throwaway cluster and installs graphile-worker.
    Peers {
        /// An admin URL of the cluster; each run creates a fresh database on it.
        #[arg(long, env = "PROVISIO_BENCH_PG_URL")]
        pg: String,
        /// The npm prefix graphile-worker is installed in.
        #[arg(long, default_value = "target/graphile-peer")]
        graphile_dir: PathBuf,
        #[arg(long, default_value_t = 30_000)]
        jobs: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: u32,
        /// Only the no-op runs.
        #[arg(long)]
        no_latency: bool,
    },
    /// The second engine process of `queue` on PostgreSQL: serves as `provisio serve` would,
    /// until it is killed. Started by the bench itself, so it needs no `provisio` binary.
    #[command(hide = true)]
    Engine {
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PROVISIO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Queue {
            actions,
            postgres_url,
            no_sqlite,
            metrics,
        } => queue::run(actions, postgres_url, no_sqlite, &metrics).await,
        BenchCmd::Orders {
            at,
            connections,
            orders,
            actions,
            batches,
            batch_size,
            servers,
            pg,
        } => {
            orders::run(orders::Options {
                at,
                connections: connections.max(1),
                orders,
                actions,
                batches,
                batch_size,
                servers,
                pg,
            })
            .await
        }
        BenchCmd::Latency {
            actions,
            latency_ms,
            servers,
            concurrency,
        } => latency::run(actions, latency_ms, servers, concurrency).await,
        BenchCmd::Group {
            services,
            latency_ms,
            servers,
            concurrency,
        } => group::run(services, latency_ms, servers, concurrency).await,
        BenchCmd::Usage {
            services,
            servers,
            page_size,
            delay_ms,
        } => usage::run(services, servers.max(1), page_size.max(1), delay_ms).await,
        BenchCmd::Audit {
            accounts,
            servers,
            page_size,
        } => audit::run(accounts, servers.max(1), page_size.max(1)).await,
        BenchCmd::Console {
            services,
            jobs,
            rounds,
            postgres_url,
            no_sqlite,
            keep_in,
        } => {
            console::run(console::Options {
                services: services.max(10),
                jobs: jobs.max(1),
                rounds: rounds.max(1),
                postgres_url,
                no_sqlite,
                keep_in,
            })
            .await
        }
        BenchCmd::Retention {
            rows,
            services,
            baseline_secs,
            pg,
        } => retention::run(rows.max(1), services.max(1), baseline_secs.max(1), pg).await,
        BenchCmd::Chaos {
            actions,
            rate,
            concurrency,
            kill_every,
            min_kills,
            sigkill_share,
            seed,
            postgres_url,
            provisio_bin,
            max_rss_mib,
            drain_seconds,
            dir,
        } => {
            let provisio_bin = provisio_bin
                .or_else(chaos::Options::sibling_provisio)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no provisio binary beside this one: build it (cargo build -p provisio-cli) or give --provisio-bin"
                    )
                })?;
            let report = chaos::run(&chaos::Options {
                actions,
                rate,
                concurrency,
                kill_every: std::time::Duration::from_secs_f64(kill_every.max(0.1)),
                min_kills,
                sigkill_share,
                seed,
                pg_url: postgres_url,
                provisio_bin,
                max_rss_mib,
                drain_limit: std::time::Duration::from_secs(drain_seconds),
                slow: std::time::Duration::from_secs(1),
                dir,
            })
            .await?;
            print!("{report}");
            if report.failures.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} chaos invariants failed", report.failures.len())
            }
        }
        BenchCmd::Memory {
            services,
            provisio_bin,
            settle_secs,
        } => {
            let bin = provisio_bin
                .or_else(chaos::Options::sibling_provisio)
                .unwrap_or_else(|| PathBuf::from("provisio"));
            memory::run(services.max(1), bin, settle_secs.max(1)).await
        }
        BenchCmd::Peers {
            pg,
            graphile_dir,
            jobs,
            concurrency,
            no_latency,
        } => {
            peers::run(peers::Options {
                pg,
                graphile_dir,
                jobs: jobs.max(1),
                concurrency: concurrency.max(1),
                no_latency,
            })
            .await
        }
        BenchCmd::Engine { config } => queue::serve_engine(&config).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
