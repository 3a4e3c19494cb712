//! What an operator asks: every service with its instances' health, and one service's instances
//! with their checks (the CLI's `services` and `instances`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use reqwest::Method;

use super::view::Instance;
use super::{Client, Result, wire};

/// A check's status, or an instance's: the worst of its checks (passing when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    fn parse(text: &str) -> Status {
        match text {
            "passing" => Status::Passing,
            "warning" => Status::Warning,
            _ => Status::Critical, // Consul's `critical`, and anything it does not know
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service and how its instances are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    pub name: String,
    /// Every tag any of its instances carries.
    pub tags: Vec<String>,
    pub passing: usize,
    pub warning: usize,
    pub critical: usize,
}

impl ServiceSummary {
    pub fn instances(&self) -> usize {
        self.passing + self.warning + self.critical
    }
}

/// One check of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckState {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub output: String,
}

/// An instance with its checks, whatever their status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceHealth {
    pub instance: Instance,
    /// The worst of its checks.
    pub status: Status,
    pub checks: Vec<CheckState>,
}

impl Client {
    /// Every registered service, by name, with its instances counted by health
    /// (`/v1/agent/services` and `/v1/agent/checks`: two reads).
    pub async fn services(&self) -> Result<Vec<ServiceSummary>> {
        let instances = self.registered().await?;
        let response = self.send(Method::GET, &["v1", "agent", "checks"], &[], None).await?;
        let checks: BTreeMap<String, wire::Check> = response.json()?;
        let mut worst: BTreeMap<&str, Status> = BTreeMap::new();
        for check in checks.values() {
            let status = Status::parse(&check.status);
            let entry = worst.entry(check.service_id.as_str()).or_insert(status);
            *entry = (*entry).max(status);
        }
        let mut services: BTreeMap<&str, (BTreeSet<&str>, [usize; 3])> = BTreeMap::new();
        for instance in &instances {
            let (tags, counts) = services.entry(instance.service.as_str()).or_default();
            tags.extend(instance.tags.iter().map(String::as_str));
            counts[worst.get(instance.id.as_str()).copied().unwrap_or(Status::Passing) as usize] += 1;
        }
        Ok(services
            .into_iter()
            .map(|(name, (tags, [passing, warning, critical]))| ServiceSummary {
                name: name.to_string(),
                tags: tags.into_iter().map(String::from).collect(),
                passing,
                warning,
                critical,
            })
            .collect())
    }

    /// Every instance of `service`, healthy or not, with its checks
    /// (`/v1/health/service/<name>`); empty when the service is unknown.
    pub async fn health(&self, service: &str) -> Result<Vec<InstanceHealth>> {
        let response = self
            .send(Method::GET, &["v1", "health", "service", service], &[], None)
            .await?;
        let entries: Vec<wire::HealthEntry> = response.json()?;
        Ok(entries
            .into_iter()
            .map(|mut entry| {
                let checks: Vec<CheckState> = std::mem::take(&mut entry.checks)
                    .into_iter()
                    .map(|c| CheckState {
                        id: c.check_id,
                        name: c.name,
                        status: Status::parse(&c.status),
                        output: c.output,
                    })
                    .collect();
                let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Passing);
                InstanceHealth {
                    instance: entry.into_instance(service),
                    status,
                    checks,
                }
            })
            .collect())
    }
}
