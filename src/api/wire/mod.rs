//! Consul's JSON, both ways: the only place that knows Consul's field names.

mod fields;
mod parse;
mod render;

pub use fields::parse_json;
pub use parse::{
    parse_agent_check, parse_catalog_deregistration, parse_catalog_registration, parse_check_update, parse_registration,
};
pub use render::{
    NodeInfo, agent_service, catalog_node, catalog_service, check_json, health_entry, node_checks, ui_service_summary,
};
