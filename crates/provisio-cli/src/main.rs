//! The `provisio` binary: runs the server, manages the database, and calls the REST API.

mod api;
mod commands;
mod local;
mod output;
mod rotate_key;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{
    client::ClientCmd, module::ModuleCmd, product::ProductCmd, server::ServerCmd,
    service::ServiceCmd,
};

/// Provisio: makes remote systems follow what the billing system decides.
#[derive(Parser, Debug)]
#[command(name = "provisio", version, about, propagate_version = true)]
struct Cli {
    /// Base URL of a running Provisio, for the commands that call the API.
    #[arg(
        long,
        global = true,
        env = "PROVISIO_URL",
        default_value = "http://127.0.0.1:8470"
    )]
    url: String,
    /// API key; when absent, read from ./provisio.admin-key if that file exists.
    #[arg(long, global = true, env = "PROVISIO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Output for people (table) or scripts (json).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = output::Format::Table)]
    output: output::Format,
    #[command(subcommand)]
    command: Command,
}

/// Where to find the database and config, for commands that work on them directly.
#[derive(clap::Args, Debug, Clone)]
struct LocalArgs {
    /// TOML config file.
    #[arg(long, env = "PROVISIO_CONFIG")]
    config: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`; overrides the config file and PROVISIO_DATABASE_URL.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the REST API and the job worker.
    Serve {
        #[command(flatten)]
        local: LocalArgs,
        /// Address to listen on (default 127.0.0.1:8470); overrides PROVISIO_LISTEN.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        local: LocalArgs,
    },
    /// API keys: over the API with an admin key, or on the database itself with
    /// `--database-url` or `--config` (to make the first key, with no server running).
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Clients: the billing system's customers.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Servers: remote systems and their credentials.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Products: what is sold.
    #[command(subcommand)]
    Product(ProductCmd),
    /// Services: what clients have on servers.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Modules: what this instance can drive.
    #[command(subcommand)]
    Module(ModuleCmd),
    /// The queue: jobs that carry actions to the remotes.
    #[command(subcommand)]
    Queue(commands::queue::QueueCmd),
    /// Handlers: gates asked before actions, notify handlers told after events.
    #[command(subcommand)]
    Handler(commands::handler::HandlerCmd),
    /// Automation rules: on an event, after a grace period, act on a client's services.
    #[command(subcommand)]
    Rule(commands::rule::RuleCmd),
    /// Show chosen fields of the services a filter selects.
    Collect(commands::collect::CollectArgs),
    /// Invoice groups: act on every service of an invoice (master and children) at once.
    #[command(subcommand)]
    Group(commands::collect::GroupCmd),
    /// Terminate services suspended longer than the clean-up threshold.
    Cleanup(commands::collect::CleanupArgs),
    /// Usage: sync from the remotes, show per service, add top-ups.
    #[command(subcommand)]
    Usage(commands::usage::UsageCmd),
    /// Audits: compare remote accounts with local services, report and fix drift.
    #[command(subcommand)]
    Audit(commands::audit::AuditCmd),
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create a key and print it (alone) on stdout; it is not shown again.
    Create {
        #[command(flatten)]
        spec: commands::key::KeySpec,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// List keys (names, roles and prefixes, never the keys).
    List {
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Revoke a key by name or id: its next request is refused.
    #[command(alias = "delete")]
    Revoke {
        name: String,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Re-seal every secret in the database under a new secret key (docs/secrets.md).
    RotateSecretKey {
        #[command(flatten)]
        args: rotate_key::RotateArgs,
        #[command(flatten)]
        local: LocalArgs,
    },
}

impl LocalArgs {
    /// Whether the command should work on the database rather than through the API.
    fn given(&self) -> bool {
        self.config.is_some() || self.database_url.is_some()
    }
}

fn init_logging(json: bool) {
    init_logging_with(json, None);
}

/// Logs to stderr, as JSON lines when `json` (each with the fields of the span it was
/// logged in and of every span around it: a job attempt's job, service, server, action,
/// attempt and trace id), and hands the engine's spans to `otlp` when export is on.
fn init_logging_with(json: bool, otlp: Option<&provisio_server::telemetry::Exporter>) {
    use tracing_subscriber::layer::{Layer, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Registry};
    type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
    let filter = EnvFilter::try_from_env("PROVISIO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut layers: Vec<Box<dyn Layer<Filtered> + Send + Sync>> = vec![if json {
        fmt.json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    }];
    if let Some(e) = otlp {
        layers.push(e.layer().boxed());
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .init();
}

fn api_key(cli_key: Option<String>) -> Option<String> {
    cli_key.or_else(|| {
        std::fs::read_to_string("provisio.admin-key")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        url,
        api_key: key,
        output,
        command,
    } = cli;
    let remote = || -> anyhow::Result<commands::Ctx> {
        Ok(commands::Ctx {
            api: api::connect(&url, api_key(key.clone()).as_deref())?,
            output,
        })
    };
    match command {
        Command::Serve { local, listen } => {
            local::serve(
                &local.config,
                &local.database_url,
                listen,
                init_logging_with,
            )
            .await
        }
        Command::Migrate { local } => {
            init_logging(false);
            local::migrate(&local.config, &local.database_url).await
        }
        Command::Key { cmd } => match cmd {
            KeyCmd::Create { spec, local } if local.given() => {
                local::key_create(&local.config, &local.database_url, &spec).await
            }
            KeyCmd::Create { spec, .. } => commands::key::create(&remote()?, &spec).await,
            KeyCmd::List { local } if local.given() => {
                local::key_list(&local.config, &local.database_url, output).await
            }
            KeyCmd::List { .. } => commands::key::list(&remote()?).await,
            KeyCmd::Revoke { name, local } if local.given() => {
                local::key_revoke(&local.config, &local.database_url, &name).await
            }
            KeyCmd::Revoke { name, .. } => commands::key::revoke(&remote()?, &name).await,
            KeyCmd::RotateSecretKey { args, local } => {
                init_logging(false);
                rotate_key::run(&local.config, &local.database_url, args).await
            }
        },
        Command::Client(cmd) => commands::client::run(cmd, &remote()?).await,
        Command::Server(cmd) => commands::server::run(cmd, &remote()?).await,
        Command::Product(cmd) => commands::product::run(cmd, &remote()?).await,
        Command::Service(cmd) => commands::service::run(cmd, &remote()?).await,
        Command::Module(cmd) => commands::module::run(cmd, &remote()?).await,
        Command::Queue(cmd) => commands::queue::run(cmd, &remote()?).await,
        Command::Handler(cmd) => commands::handler::run(cmd, &remote()?).await,
        Command::Rule(cmd) => commands::rule::run(cmd, &remote()?).await,
        Command::Collect(args) => commands::collect::collect(args, &remote()?).await,
        Command::Group(cmd) => commands::collect::group(cmd, &remote()?).await,
        Command::Cleanup(args) => commands::collect::cleanup(args, &remote()?).await,
        Command::Usage(cmd) => commands::usage::run(cmd, &remote()?).await,
        Command::Audit(cmd) => commands::audit::run(cmd, &remote()?).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
