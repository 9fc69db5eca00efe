//! Discovery lookup patterns, compiled once per binding spec.

use crate::airflow::pattern::LookupPattern;
use crate::api::{AirflowSecretBindingSpec, EntryKind, EntryState, EntryStatus};

/// The lookup pattern of one kind of discovery.
#[derive(Debug, Default, Clone)]
pub enum Lookup {
    /// No pattern: every id under the prefix.
    #[default]
    All,
    /// Ids the pattern matches at their start.
    Matching(LookupPattern),
    /// The pattern is refused (Python rejects it, or a limit): nothing is discovered (reported
    /// in status).
    Unusable,
}

impl Lookup {
    /// Whether the id is discovered. An id the pattern cannot be decided on (it backtracks past
    /// the engine's limit; Python would hang on it) is not discovered, and the failure is logged.
    pub fn admits(&self, id: &str) -> bool {
        match self {
            Lookup::All => true,
            Lookup::Matching(p) => p.matches(id).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "lookup pattern undecidable; id not discovered");
                false
            }),
            Lookup::Unusable => false,
        }
    }
}

/// Compiled lookup patterns of a binding's discovery.
#[derive(Debug, Default, Clone)]
pub struct DiscoveryPatterns {
    pub connections: Lookup,
    pub variables: Lookup,
}

impl DiscoveryPatterns {
    /// Compiles the binding's lookup patterns; one that cannot be used becomes an Invalid status
    /// line naming the field.
    pub fn compile(spec: &AirflowSecretBindingSpec) -> (DiscoveryPatterns, Vec<EntryStatus>) {
        let mut patterns = DiscoveryPatterns::default();
        let mut problems = Vec::new();
        let Some(d) = &spec.discovery else {
            return (patterns, problems);
        };
        for (kind, field, pattern, prefix) in [
            (
                EntryKind::Connection,
                "connectionsLookupPattern",
                &d.connections_lookup_pattern,
                &d.connections_prefix,
            ),
            (
                EntryKind::Variable,
                "variablesLookupPattern",
                &d.variables_lookup_pattern,
                &d.variables_prefix,
            ),
        ] {
            let Some(p) = pattern else { continue };
            let lookup = match LookupPattern::new(p) {
                Ok(compiled) => Lookup::Matching(compiled),
                Err(e) => {
                    problems.push(EntryStatus {
                        kind,
                        name: format!("spec.discovery.{field}"),
                        env_name: None,
                        secret_id: prefix.clone().unwrap_or_default(),
                        version_id: None,
                        state: EntryState::Invalid,
                        message: Some(format!("{e}; nothing is discovered with this prefix")),
                    });
                    Lookup::Unusable
                }
            };
            match kind {
                EntryKind::Connection => patterns.connections = lookup,
                _ => patterns.variables = lookup,
            }
        }
        (patterns, problems)
    }
}
