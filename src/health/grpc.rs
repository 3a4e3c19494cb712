//! gRPC checks (`GRPC: "host:port/service"`): the standard health service,
//! `grpc.health.v1.Health/Check`, through tonic's health client. SERVING is passing; any other
//! status, an error or a timeout is critical, as in Consul. The channel is made once per check
//! and connects lazily, so its HTTP/2 connection is reused from one interval to the next.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::model::{Health, format_go_duration};

pub struct GrpcProbe {
    /// The client, or why none could be made (an address tonic does not take).
    client: Result<HealthClient<Channel>, String>,
    service: String,
    timeout: Duration,
    /// How the output names the check: Consul's `gRPC check <target>/<service>`.
    what: String,
}

impl GrpcProbe {
    /// A probe of `service` (empty: the server as a whole) at `target` (`host:port`), over TLS
    /// verified against the system's CAs when `tls`.
    pub fn new(target: &str, service: &str, tls: bool, timeout: Duration) -> Self {
        let what = if service.is_empty() {
            format!("gRPC check {target}")
        } else {
            format!("gRPC check {target}/{service}")
        };
        let client = (|| {
            let scheme = if tls { "https" } else { "http" };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{target}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(timeout)
                .timeout(timeout);
            if tls {
                let config = ClientTlsConfig::new().with_native_roots();
                endpoint = endpoint.tls_config(config).map_err(|e| e.to_string())?;
            }
            Ok(HealthClient::new(endpoint.connect_lazy()))
        })();
        Self {
            client,
            service: service.to_owned(),
            timeout,
            what,
        }
    }

    pub async fn run(&self) -> (Health, String) {
        let what = &self.what;
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => return (Health::Critical, format!("{what}: {error}")),
        };
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        match tokio::time::timeout(self.timeout, client.check(request)).await {
            Err(_) => (
                Health::Critical,
                format!("{what}: timed out after {}", format_go_duration(self.timeout)),
            ),
            Ok(Err(status)) => (
                Health::Critical,
                format!(
                    "{what}: rpc error: code = {:?} desc = {}",
                    status.code(),
                    status.message()
                ),
            ),
            Ok(Ok(response)) => match response.into_inner().status() {
                ServingStatus::Serving => (Health::Passing, format!("{what}: success")),
                other => (Health::Critical, format!("{what}: status {}", other.as_str_name())),
            },
        }
    }
}
