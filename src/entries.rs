//! What Secrets Manager answered for each entry of a binding: the data that flows from the
//! Secrets Manager reader ([`crate::resolve`]) into the pure planning code ([`crate::plan`]).

use crate::api::{EntryKind, EntryState};

/// One entry after Secrets Manager was asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEntry {
    pub kind: EntryKind,
    /// Connection id, variable key, or `section.key`.
    pub name: String,
    /// For config entries: (section, key).
    pub config: Option<(String, String)>,
    pub secret_id: String,
    pub version_id: Option<String>,
    pub outcome: Fetched,
    /// The Airflow team a connection or variable is scoped to (`spec.team`).
    pub team: Option<String>,
}

/// What Secrets Manager answered for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The `SecretString`.
    Value(String),
    /// The secret has only `SecretBinary`, which Airflow never reads.
    BinaryOnly,
    /// Not found, access denied, other error, or invalid: with a message that has no value in it.
    Problem(EntryState, String),
    /// Not read: the managed Secret holds this version's converted value already
    /// ([`crate::plan::held`]).
    Held,
    /// A held value as the managed Secret has it: already converted the way Airflow reads it.
    Converted(String),
}
