//! Secret names from prefixes, as Airflow's `SecretsManagerBackend` builds them, and the inverse
//! used by discovery.
//!
//! Airflow: `self.connections_prefix = connections_prefix.rstrip(sep)` (when the prefix is
//! truthy), then `f"{prefix}{sep}{id}"` when the stripped prefix is non-empty, or the bare id.
//! `rstrip(sep)` strips trailing *characters* that occur anywhere in `sep`, not the suffix `sep`.

/// Python's `s.rstrip(chars)`.
pub fn py_rstrip<'a>(s: &'a str, chars: &str) -> &'a str {
    s.trim_end_matches(|c| chars.contains(c))
}

/// The prefix as the backend keeps it: `prefix.rstrip(sep)`.
pub fn base_prefix<'a>(prefix: &'a str, sep: &str) -> &'a str {
    py_rstrip(prefix, sep)
}

/// The secret name Airflow reads for `id`.
pub fn secret_name(prefix: &str, sep: &str, id: &str) -> String {
    let base = base_prefix(prefix, sep);
    if base.is_empty() {
        id.to_string()
    } else {
        format!("{base}{sep}{id}")
    }
}

/// The id under which Airflow would find the secret `name`, if any: the inverse of
/// [`secret_name`]. `None` when `name` is not under the prefix, or the id would be empty.
pub fn id_for_secret<'a>(prefix: &str, sep: &str, name: &'a str) -> Option<&'a str> {
    let base = base_prefix(prefix, sep);
    let id = if base.is_empty() {
        name
    } else {
        name.strip_prefix(base)?.strip_prefix(sep)?
    };
    (!id.is_empty()).then_some(id)
}

/// The `ListSecrets` name filter that narrows the listing to candidates (a prefix filter);
/// results are still checked with [`id_for_secret`].
pub fn list_filter(prefix: &str, sep: &str) -> Option<String> {
    let base = base_prefix(prefix, sep);
    (!base.is_empty()).then(|| format!("{base}{sep}"))
}

/// Separator between team and id in a team-scoped secret name (the amazon provider's
/// `TEAM_SEP`, Airflow ≥ 3.3 with multi-team).
pub const TEAM_SEP: &str = "--";

/// The id of a team-scoped id `<team>--<id>` for `team`; None for another team's or a global
/// one. Ids that themselves contain `--` are returned too: Airflow refuses them, and the
/// binding reports them.
pub fn team_scoped_id<'a>(team: &str, scoped: &'a str) -> Option<&'a str> {
    let id = scoped.strip_prefix(team)?.strip_prefix(TEAM_SEP)?;
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_airflow_builds_them() {
        assert_eq!(
            secret_name("airflow/connections", "/", "My_Conn"),
            "airflow/connections/My_Conn"
        );
        assert_eq!(secret_name("vars//", "/", "hello"), "vars/hello");
        assert_eq!(secret_name("", "/", "hello"), "hello");
        assert_eq!(secret_name("///", "/", "hello"), "hello");
        assert_eq!(
            secret_name("airflow-connections", "-", "My_Conn"),
            "airflow-connections-My_Conn"
        );
        // The default variables prefix keeps its '/' with sep '-'.
        assert_eq!(
            secret_name("airflow/variables", "-", "hello"),
            "airflow/variables-hello"
        );
        // rstrip strips any of sep's characters, not the suffix.
        assert_eq!(secret_name("conns-/-", "-/", "x"), "conns-/x");
    }

    #[test]
    fn ids_from_names_invert_the_construction() {
        for (prefix, sep, id) in [
            ("airflow/connections", "/", "db"),
            ("airflow/connections/", "/", "team/db"),
            ("", "/", "bare"),
            ("p", "::", "a::b"),
            ("conns-/-", "-/", "x"),
        ] {
            let name = secret_name(prefix, sep, id);
            assert_eq!(
                id_for_secret(prefix, sep, &name),
                Some(id),
                "{prefix:?} {sep:?} {id:?}"
            );
        }
        assert_eq!(
            id_for_secret("airflow/connections", "/", "airflow/connectionsX/db"),
            None
        );
        assert_eq!(
            id_for_secret("airflow/connections", "/", "airflow/connections/"),
            None
        );
        assert_eq!(id_for_secret("airflow/connections", "/", "other/db"), None);
        // Case matters in secret names.
        assert_eq!(
            id_for_secret("airflow/connections", "/", "Airflow/connections/db"),
            None
        );
    }

    #[test]
    fn team_scoped_ids() {
        let name = secret_name("airflow/connections", "/", "data-eng--my_db");
        let scoped = id_for_secret("airflow/connections", "/", &name).unwrap();
        assert_eq!(team_scoped_id("data-eng", scoped), Some("my_db"));
        assert_eq!(team_scoped_id("data", scoped), None, "another team's");
        assert_eq!(team_scoped_id("data-eng", "data-eng--"), None);
        assert_eq!(team_scoped_id("ml", "ml--a--b"), Some("a--b"));
    }

    #[test]
    fn list_filters() {
        assert_eq!(
            list_filter("airflow/connections/", "/").as_deref(),
            Some("airflow/connections/")
        );
        assert_eq!(list_filter("", "/"), None);
    }
}
