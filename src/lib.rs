//! airflow-secrets-operator: AWS Secrets Manager entries become Airflow connections, variables and
//! config options on Airflow 3 Remote Execution agents.
//!
//! Data flows one way: binding spec ([`api`]) → resolve entries (the shared Secrets Manager view, [`secretsmanager`]) →
//! plan ([`plan`], pure: Airflow's mapping from [`airflow`], Secret data, workload patches,
//! status) → act ([`controller`]: write only what differs).
#![forbid(unsafe_code)]

pub mod airflow;
pub mod api;
pub mod controller;
pub mod crd;
pub mod entries;
pub mod events;
pub mod http;
pub mod import;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod secretsmanager;
pub mod source;
