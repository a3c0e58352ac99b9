//! `pipe serve catalog`: an Iceberg REST catalog backed by the SQL catalog (SQLite by
//! default, PostgreSQL for shared use). Commits check the request's requirements against the
//! table as it is, apply its updates, write the metadata file and swap the catalog's pointer
//! with the same compare-and-swap pipe's own SQL-catalog commits use, so writers through the
//! server and writers straight to the database never lose each other's commits.

mod auth;
mod error;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use clap::Parser;
use pipe_framework::{Error, Result, Secret};
use tokio_util::sync::CancellationToken;

use self::auth::ServerAuth;
use crate::catalog::sql::SqlCatalogDb;

/// `pipe serve catalog`, registered by the `pipe` binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogService;

/// Serve an Iceberg REST catalog over a SQL catalog database.
#[derive(Debug, Parser)]
struct Args {
    /// The catalog database: `sqlite://path/catalog.db` (created if missing) or
    /// `postgres://user@host/db` (the same tables pipe's `type = "sql"` catalog and
    /// pyiceberg's SqlCatalog use).
    #[arg(
        long,
        env = "PIPE_CATALOG_URI",
        hide_env_values = true,
        default_value = "sqlite://.pipe/catalog.db"
    )]
    catalog: String,
    /// Directory new tables are placed under (`<warehouse>/<namespace>/<table>`).
    #[arg(long, default_value = ".pipe/warehouse")]
    warehouse: String,
    /// The catalog's name in the database (rows are keyed by it).
    #[arg(long, default_value = "pipe")]
    name: String,
    /// Address to listen on (`127.0.0.1:0` picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8181")]
    listen: SocketAddr,
    /// Serve under `/v1/<prefix>/...` (returned by `/v1/config`); others answer 404.
    #[arg(long)]
    prefix: Option<String>,
    /// A bearer token every call must carry (else 401).
    #[arg(long, env = "PIPE_CATALOG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// OAuth2 client credentials `client_id:client_secret` that `/v1/oauth/tokens`
    /// exchanges for tokens (each valid --token-ttl-secs).
    #[arg(long, env = "PIPE_CATALOG_CLIENT", hide_env_values = true)]
    client: Option<String>,
    /// Lifetime of tokens issued by `/v1/oauth/tokens`, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl_secs: u64,
    /// Largest request body accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mb: usize,
}

/// What every request shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// The catalog database.
    pub db: SqlCatalogDb,
    /// The one prefix served, if any.
    pub prefix: Option<String>,
    /// Who may call.
    pub auth: ServerAuth,
}

#[async_trait]
impl pipe_framework::Service for CatalogService {
    fn description(&self) -> &'static str {
        "Iceberg REST catalog over the SQL catalog (pipe serve catalog --help)"
    }

    async fn run(&self, args: Vec<String>, shutdown: CancellationToken) -> Result<()> {
        let args = match Args::try_parse_from(args) {
            Ok(a) => a,
            Err(e) if !e.use_stderr() => {
                // --help, --version
                let _ = e.print();
                return Ok(());
            }
            Err(e) => return Err(Error::user(e.to_string().trim_end().to_string())),
        };
        serve(args, shutdown).await
    }
}

async fn serve(args: Args, shutdown: CancellationToken) -> Result<()> {
    let shown = pipe_framework::secret::redact(&args.catalog).into_owned();
    let db = SqlCatalogDb::connect(
        &args.catalog,
        &args.warehouse,
        &args.name,
        &crate::io::StorageOptions::default(),
    )
    .await
    .map_err(|e| Error::from(e).context("opening the catalog database"))?;
    let client = match args.client.as_deref() {
        None => None,
        Some(c) => {
            let (id, secret) = c
                .split_once(':')
                .ok_or_else(|| Error::user("--client must be `client_id:client_secret`"))?;
            Some((id.to_string(), Secret::new(secret)))
        }
    };
    let auth = ServerAuth::new(
        args.token.map(Secret::new),
        client,
        Duration::from_secs(args.token_ttl_secs),
    );
    if !auth.required() && !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "serving without --token or --client on a non-loopback address: anyone who can \
             reach it can change every table"
        );
    }
    let state = Arc::new(AppState {
        db,
        prefix: args.prefix,
        auth,
    });
    let app: Router = routes::router(state, args.max_body_mb.saturating_mul(1024 * 1024));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::user(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::external(format!("reading the bound address: {e}")))?;
    announce(bound, &shown, &args.warehouse);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| Error::external(format!("serving on {bound}: {e}")))?;
    tracing::info!("catalog server stopped");
    Ok(())
}

/// The one line a server prints at start, whatever the verbosity: where it listens.
#[allow(clippy::print_stderr)]
fn announce(bound: SocketAddr, catalog: &str, warehouse: &str) {
    eprintln!(
        "pipe serve catalog: listening on http://{bound} (catalog {catalog}, warehouse {warehouse})"
    );
}
