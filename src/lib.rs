//! airflow-secrets-operator: AWS Secrets Manager entries become Airflow connections, variables and
//! config options on Airflow 3 Remote Execution agents.
//!
//! Data flows one way: binding spec ([`api`]) → resolve entries (Secrets Manager) → Airflow
//! mapping ([`airflow`], pure) → desired objects (pure) → apply (server-side apply) → status.
#![forbid(unsafe_code)]

pub mod airflow;
pub mod api;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod http;
pub mod import;
pub mod metrics;
pub mod render;
pub mod resolve;
