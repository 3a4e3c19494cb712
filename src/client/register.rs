//! Registering instances: the registration itself, and a service that keeps itself registered
//! with heartbeats (Eureka's model, on a Consul TTL check).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Client, Error, Result};

/// An instance to register; built with [`Registration::new`] and its setters.
///
/// ```
/// use std::time::Duration;
/// use sextant::client::{Check, Registration};
///
/// let orders = Registration::new("orders")
///     .id("orders-1")
///     .address("10.0.0.7")
///     .port(8080)
///     .tag("primary")
///     .weight(10)
///     .check(Check::Http {
///         url: "http://10.0.0.7:8080/health".into(),
///         interval: Duration::from_secs(10),
///         timeout: Duration::from_secs(2),
///     });
/// assert_eq!(orders.check_id(), "service:orders-1");
/// assert_eq!(orders.to_json()["Check"]["Interval"], "10000ms");
/// ```
#[derive(Debug, Clone)]
pub struct Registration {
    name: String,
    id: Option<String>,
    address: Option<String>,
    port: Option<u16>,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    weight: Option<u32>,
    check: Option<Check>,
    deregister_after: Option<Duration>,
}

/// The check sextant keeps on a registered instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The instance reports itself (a heartbeat); critical when a report is later than `ttl`.
    /// `passing` registers it passing instead of Consul's critical-until-reported.
    Ttl { ttl: Duration, passing: bool },
    /// sextant sends a GET to `url` every `interval`; a 2xx passes.
    Http {
        url: String,
        interval: Duration,
        timeout: Duration,
    },
    /// sextant connects to `address` every `interval`.
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
    },
}

impl Registration {
    /// An instance of `service`, its ID the service name unless [`id`](Self::id) sets one.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            name: service.into(),
            id: None,
            address: None,
            port: None,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            weight: None,
            check: None,
            deregister_after: None,
        }
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// The weight balancers give the instance while it passes (Consul's `Weights.Passing`).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    pub fn check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// Deregisters the instance once its check has been critical this long (Consul's
    /// `DeregisterCriticalServiceAfter`): what cleans up after an instance that crashed.
    pub fn deregister_critical_after(mut self, after: Duration) -> Self {
        self.deregister_after = Some(after);
        self
    }

    /// The instance's ID: the one given, else the service name (Consul's rule).
    pub fn instance_id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }

    /// The ID sextant gives the registration's single check (`service:<id>`).
    pub fn check_id(&self) -> String {
        format!("service:{}", self.instance_id())
    }

    /// The body of `PUT /v1/agent/service/register`.
    pub fn to_json(&self) -> Value {
        let mut body = json!({ "Name": self.name, "ID": self.instance_id(), "Tags": self.tags, "Meta": self.meta });
        if let Some(address) = &self.address {
            body["Address"] = json!(address);
        }
        if let Some(port) = self.port {
            body["Port"] = json!(port);
        }
        if let Some(weight) = self.weight {
            body["Weights"] = json!({ "Passing": weight, "Warning": 1 });
        }
        if let Some(check) = &self.check {
            let mut check = check.to_json();
            if let Some(after) = self.deregister_after {
                check["DeregisterCriticalServiceAfter"] = json!(go_duration(after));
            }
            body["Check"] = check;
        }
        body
    }
}

impl Check {
    fn to_json(&self) -> Value {
        match self {
            Check::Ttl { ttl, passing } => {
                let mut check = json!({ "TTL": go_duration(*ttl) });
                if *passing {
                    check["Status"] = json!("passing");
                }
                check
            }
            Check::Http { url, interval, timeout } => {
                json!({ "HTTP": url, "Interval": go_duration(*interval), "Timeout": go_duration(*timeout) })
            }
            Check::Tcp {
                address,
                interval,
                timeout,
            } => {
                json!({ "TCP": address, "Interval": go_duration(*interval), "Timeout": go_duration(*timeout) })
            }
        }
    }
}

/// A duration as Go writes it for Consul (`1500ms`).
fn go_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

/// This service, registered with a TTL check that a background task keeps passing.
///
/// The task heartbeats at a third of the TTL (±10 %, so instances started together spread
/// out), registers the instance again when sextant answers a heartbeat with 404 (it has
/// forgotten the instance: deregistered by hand, or restarted with an empty registry), and keeps
/// trying through errors. On a graceful shutdown, [`deregister`](Self::deregister) stops it and
/// returns once sextant has acknowledged the deregistration: that is what leaves nothing behind.
/// Dropping it without that deregisters in the background, best effort (a runtime that is
/// shutting down may never run it). An instance that dies without either is removed by sextant
/// after its check has been critical for [`deregister_critical_after`](Registration::deregister_critical_after)
/// (by default 10 TTLs, at least a minute).
///
/// ```no_run
/// use std::time::Duration;
/// use sextant::client::{Client, Registration};
///
/// # async fn run() -> Result<(), sextant::client::Error> {
/// let client = Client::from_env()?;
/// let me = client
///     .register_self(Registration::new("orders").id("orders-1").port(8080), Duration::from_secs(10))
///     .await?;
/// // … serve until asked to stop …
/// me.deregister().await?; // returns once sextant has acknowledged it
/// # Ok(()) }
/// ```
pub struct SelfRegistration {
    client: Client,
    id: String,
    stop: CancellationToken,
    heartbeats: Option<JoinHandle<()>>,
    /// Set once sextant has acknowledged the deregistration.
    deregistered: bool,
}

impl SelfRegistration {
    pub(crate) async fn start(client: Client, registration: Registration, ttl: Duration) -> Result<Self> {
        if ttl < Duration::from_secs(1) {
            return Err(Error::Invalid {
                what: "TTL",
                reason: format!("{ttl:?} is under 1s"),
            });
        }
        // Registered passing: the service registers when it is ready to serve.
        let mut registration = registration.check(Check::Ttl { ttl, passing: true });
        if registration.deregister_after.is_none() {
            registration.deregister_after = Some((ttl * 10).max(Duration::from_secs(60)));
        }
        client.register(&registration).await?;
        let stop = CancellationToken::new();
        let id = registration.instance_id().to_string();
        let heartbeats = tokio::spawn(heartbeat(client.clone(), registration, ttl, stop.clone()));
        Ok(Self {
            client,
            id,
            stop,
            heartbeats: Some(heartbeats),
            deregistered: false,
        })
    }

    /// The registered instance's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops the heartbeats and deregisters; returns when sextant has acknowledged it.
    pub async fn deregister(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(heartbeats) = self.heartbeats.take() {
            let _ = heartbeats.await;
        }
        match self.client.deregister(&self.id).await {
            Ok(()) | Err(Error::NotFound { .. }) => {
                self.deregistered = true;
                Ok(())
            }
            Err(error) => Err(error), // dropping `self` tries once more in the background
        }
    }
}

impl Drop for SelfRegistration {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.deregistered {
            return;
        }
        // A heartbeat task still running (or a deregistration cancelled half-way) must end before
        // the deregistration, so a registration it has in flight cannot land after it.
        let (heartbeats, client, id) = (
            self.heartbeats.take(),
            self.client.clone(),
            std::mem::take(&mut self.id),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(heartbeats) = heartbeats {
                    let _ = heartbeats.await;
                }
                if let Err(error) = client.deregister(&id).await {
                    tracing::warn!(instance = %id, %error, "deregistering on drop failed");
                }
            });
        }
    }
}

async fn heartbeat(client: Client, registration: Registration, ttl: Duration, stop: CancellationToken) {
    let (id, check) = (registration.instance_id().to_string(), registration.check_id());
    let period = ttl / 3;
    loop {
        let next = period.mul_f64(rand::random_range(0.9..=1.1));
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = stop.cancelled() => return,
        }
        let beat = tokio::select! {
            beat = client.pass_check(&check, "") => beat,
            () = stop.cancelled() => return,
        };
        match beat {
            Ok(()) => {}
            Err(Error::NotFound { .. }) => {
                tracing::warn!(instance = %id, "sextant does not know this instance any more: registering it again");
                match client.register(&registration).await {
                    Ok(()) => tracing::info!(instance = %id, "registered again"),
                    Err(error) => tracing::warn!(instance = %id, %error, "registering again failed; will retry"),
                }
            }
            Err(error) => tracing::warn!(instance = %id, %error, "heartbeat failed; will retry"),
        }
    }
}
