//! Wiring, from settings validated once (`Config::settings`): store → registry (restored) →
//! health checks → DNS → HTTP, bound to their addresses before any serves, stopped together;
//! and the zone reload SIGHUP asks for.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::acl::Acl;
use crate::api::{self, ApiState, NodeInfo};
use crate::config::{Config, ConfigError, Settings, StoreSettings};
use crate::dns::answers::ServiceAnswerMap;
use crate::dns::forward::Forwarder;
use crate::dns::zones::{ZoneError, ZoneSource};
use crate::dns::{DnsEngine, DnsListeners, DnsServer};
use crate::health::{HealthChecker, HealthError};
use crate::history::History;
use crate::model::{Node, NodeName};
use crate::registry::{Registry, RegistryError};
use crate::store::{EtcdStore, Journal, RedbStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] RegistryError),
    #[error("cannot start the journal thread: {0}")]
    Journal(std::io::Error),
    #[error("cannot listen for DNS on {addr}: {source}")]
    BindDns { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    BindHttp { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::api::tls::TlsError),
}

/// A running server.
pub struct App {
    registry: Arc<Registry>,
    engine: Arc<DnsEngine>,
    /// What a zone reload reads.
    zone_source: ZoneSource,
    /// The HTTP API's TLS certificate, when it is served over TLS (reloaded with the zones).
    http_tls: Option<Arc<crate::api::tls::HttpTls>>,
    health: HealthChecker,
    dns: DnsServer,
    http: JoinHandle<()>,
    /// Samples each service's DNS queries and health for the dashboard.
    history: JoinHandle<()>,
    shutdown: CancellationToken,
    dns_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl App {
    /// Binds every listener and starts serving, with the registry kept in `config.data_dir`.
    pub async fn bind(config: Config) -> Result<Self, AppError> {
        let settings = config.settings()?;
        let store: Arc<dyn Store> = match &settings.store {
            StoreSettings::Embedded(data_dir) => {
                let data_dir = data_dir.clone();
                Arc::new(off_the_runtime(move || RedbStore::open(&data_dir)).await?)
            }
            // Connecting blocks on the store's own runtime: not on this one's threads.
            StoreSettings::Etcd(etcd) => {
                let etcd = etcd.clone();
                Arc::new(off_the_runtime(move || EtcdStore::open(&etcd)).await?)
            }
        };
        Self::start(settings, store).await
    }

    /// Binds every listener and starts serving, with the registry kept in `store`.
    pub async fn bind_with_store(config: Config, store: Arc<dyn Store>) -> Result<Self, AppError> {
        Self::start(config.settings()?, store).await
    }

    async fn start(settings: Settings, store: Arc<dyn Store>) -> Result<Self, AppError> {
        let Settings {
            dns: dns_settings,
            dns_server,
            http,
            max_checks_in_flight,
            metrics_service_limit,
            bounds,
            flap_damping,
            store: where_kept,
        } = settings;
        let node_addr = dns_settings.node_addr;
        // The registry as it was: an unreadable store stops the start, never an empty registry.
        let journal = Journal::start(store.clone()).map_err(AppError::Journal)?;
        let answers = Arc::new(ServiceAnswerMap::new(&dns_settings));
        let node_name = NodeName::parse(&dns_settings.node_name).map_err(|message| {
            AppError::Config(ConfigError::Invalid {
                field: "node_name",
                message,
            })
        })?;
        let mut local = Node::local(node_name, node_addr);
        local.id = node_id(&dns_settings.node_name).into();
        let registry = Registry::with_journal(local, answers.clone(), journal);
        registry.set_bounds(bounds);
        if let Some(damping) = flap_damping {
            registry.damp_flapping(damping);
        }
        // Reading the store blocks (a file, or etcd through the store's own runtime).
        let loading = std::time::Instant::now();
        let restored = {
            let (registry, store) = (registry.clone(), store.clone());
            off_the_runtime(move || registry.restore(&*store)).await?
        };
        let (services, took_ms) = (registry.services().len(), loading.elapsed().as_millis() as u64);
        if store.shared() {
            // Every change after what was read, this server's own included, comes from there.
            let follower: Arc<dyn crate::store::Follower> = registry.clone();
            store.follow(registry.index(), Arc::downgrade(&follower));
        }
        match where_kept {
            StoreSettings::Embedded(dir) => {
                tracing::info!(instances = restored, services, took_ms, data_dir = %dir.display(), "registry restored")
            }
            StoreSettings::Etcd(etcd) => {
                tracing::info!(instances = restored, services, took_ms, etcd = %etcd.endpoints.join(","), prefix = %etcd.prefix, "registry restored")
            }
        }
        let zone_source = dns_server.zones;
        let zones = zone_source.load()?;
        tracing::info!(files = ?zones.files, "zones loaded");
        for warning in &zones.warnings {
            tracing::warn!("{warning}");
        }
        let forwarder = Forwarder::new(
            dns_server.recursors,
            dns_server.recursor_clients,
            dns_server.recursor_timeout,
        );

        // Everything that can fail happens before anything serves: a start that fails (a port
        // taken, a bad setting) drops what it made, which releases the ports and the database.
        let dns_error = |source| AppError::BindDns {
            addr: dns_server.listen,
            source,
        };
        let listeners = DnsListeners::bind(dns_server.listen, dns_server.workers)
            .await
            .map_err(dns_error)?;
        let dns_addr = listeners.local_addr().map_err(dns_error)?;
        let http_error = |source| AppError::BindHttp {
            addr: http.listen,
            source,
        };
        let http_tls = match &http.tls {
            Some(files) => Some(Arc::new(crate::api::tls::HttpTls::load(files.clone())?)),
            None => None,
        };
        let http_listener = crate::net::listen_tcp(http.listen).map_err(http_error)?;
        let http_addr = http_listener.local_addr().map_err(http_error)?;
        let engine =
            Arc::new(DnsEngine::new(&dns_settings, registry.clone(), answers, zones).with_forwarder(forwarder));
        let acl = Arc::new(Acl::new(http.acl_token, http.acl_read_token));
        let shutdown = CancellationToken::new();
        let history = History::new(registry.clone(), engine.stats());
        let state = ApiState {
            registry: registry.clone(),
            node: Arc::new(NodeInfo {
                id: node_id(&dns_settings.node_name),
                name: dns_settings.node_name.clone(),
                address: node_addr.to_string(),
                datacenter: http.datacenter,
            }),
            leader: http_addr.to_string(),
            acl: acl.clone(),
            stopping: shutdown.child_token(),
            metrics: Arc::new(crate::metrics::Metrics::new(
                registry.clone(),
                engine.stats(),
                metrics_service_limit,
            )),
            history: history.clone(),
            max_blocking_queries: http.limits.max_blocking_queries,
        };
        let health = HealthChecker::start(registry.clone(), max_checks_in_flight)?;
        let dns = match listeners.serve(engine.clone(), dns_server.tcp) {
            Ok(dns) => dns,
            Err(source) => {
                health.shutdown().await;
                return Err(dns_error(source));
            }
        };
        let http_server = tokio::spawn(api::serve::serve(
            http_listener,
            api::router(state),
            http.header_timeout,
            http.limits,
            http_tls.clone(),
            shutdown.clone(),
        ));
        let history = tokio::spawn(history.run(shutdown.child_token()));
        if !acl.is_configured() && !http_addr.ip().is_loopback() {
            tracing::warn!(
                %http_addr,
                "no ACL token: the API takes writes from clients on this machine only; \
                 give --acl-token-file to let other hosts register"
            );
        }
        let scheme = if http_tls.is_some() { "https" } else { "http" };
        tracing::info!(dns = %dns_addr, http = %http_addr, scheme, domain = %dns_settings.domain, "sextant is serving");
        Ok(Self {
            registry,
            engine,
            zone_source,
            http_tls,
            health,
            dns,
            http: http_server,
            history,
            shutdown,
            dns_addr,
            http_addr,
        })
    }

    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn health(&self) -> &HealthChecker {
        &self.health
    }

    /// Reads the zone files again and serves them, or, if any is invalid or none is left where
    /// some are served, reports it and keeps serving the zones already loaded. Returns the files
    /// loaded.
    pub fn reload_zones(&self) -> Result<Vec<std::path::PathBuf>, ZoneError> {
        let zones = self.zone_source.load()?;
        let loaded = self.engine.zone_files();
        if zones.files.is_empty() && loaded > 0 {
            return Err(ZoneError::NoFilesLeft {
                dir: self.zone_source.dir.clone(),
                loaded,
            });
        }
        for warning in &zones.warnings {
            tracing::warn!("{warning}");
        }
        let files = zones.files.clone();
        self.engine.replace_zones(zones);
        Ok(files)
    }

    /// Reads the HTTP API's TLS certificate, key and clients' CA again, when it is served over
    /// TLS; on an error the ones in use stay. `Ok(false)`: no TLS.
    pub fn reload_tls(&self) -> Result<bool, crate::api::tls::TlsError> {
        match &self.http_tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.dns.shutdown().await;
        if let Err(error) = self.http.await {
            tracing::warn!(%error, "HTTP server task failed");
        }
        let _ = self.history.await;
        self.health.shutdown().await;
        // Nothing writes any more: commit what is queued.
        let registry = self.registry;
        let _ = tokio::task::spawn_blocking(move || registry.close()).await;
    }
}

/// Runs blocking work (a store's I/O) off the runtime's threads; a panic in it stays a panic.
async fn off_the_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("blocking work was cancelled: {error}"),
        },
    }
}

/// A stable UUID-shaped node ID derived from the node name (Consul clients expect one).
fn node_id(node_name: &str) -> String {
    // FNV-1a, twice with different seeds: stable across runs and versions, unlike std's hasher.
    let fnv = |seed: u64| {
        node_name
            .bytes()
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let hex = format!("{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
