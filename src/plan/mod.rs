//! The pure middle of the operator: from what was observed (a binding, what Secrets Manager
//! answered, the Deployments and Secrets in the cluster) to everything that should be written —
//! Secret data, workload apply configurations, status — without any I/O, so that every decision
//! is unit-tested without a cluster.

#![warn(clippy::too_many_lines)]

pub mod backend;
pub mod binding;
pub mod content;
pub mod held;
pub mod labelled;
pub mod select;
pub mod status;
pub mod workload;
