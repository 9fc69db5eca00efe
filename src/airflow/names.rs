//! Environment variable names Airflow looks up, and which of them Kubernetes can carry.
//!
//! Airflow's `EnvironmentVariablesBackend` looks up exactly `"AIRFLOW_CONN_" + conn_id.upper()`
//! and `"AIRFLOW_VAR_" + key.upper()`, with Python's Unicode-aware `str.upper()` and no other
//! change (no `-` to `_`). Config options are read from
//! `"AIRFLOW__" + section.replace(".", "_").upper() + "__" + key.upper()`.

/// Prefix of connection variables.
pub const CONN_PREFIX: &str = "AIRFLOW_CONN_";
/// Prefix of variable variables.
pub const VAR_PREFIX: &str = "AIRFLOW_VAR_";

/// Python's `str.upper()`: full Unicode upper-case mapping (`ß` becomes `SS`), no locale.
pub fn py_upper(s: &str) -> String {
    s.to_uppercase()
}

/// `AIRFLOW_CONN_<CONN_ID>`.
pub fn connection_env_name(conn_id: &str) -> String {
    format!("{CONN_PREFIX}{}", py_upper(conn_id))
}

/// `AIRFLOW_VAR_<KEY>`.
pub fn variable_env_name(key: &str) -> String {
    format!("{VAR_PREFIX}{}", py_upper(key))
}

/// Separator between team and id in a team-scoped env name (Airflow's `TEAM_SEP`).
pub const ENV_TEAM_SEP: &str = "___";

/// `AIRFLOW_CONN__<TEAM>___<CONN_ID>` (Airflow ≥ 3.3, multi-team), or the global name.
pub fn team_connection_env_name(team: Option<&str>, conn_id: &str) -> String {
    match team {
        Some(t) => format!(
            "{CONN_PREFIX}_{}{ENV_TEAM_SEP}{}",
            py_upper(t),
            py_upper(conn_id)
        ),
        None => connection_env_name(conn_id),
    }
}

/// `AIRFLOW_VAR__<TEAM>___<KEY>` (Airflow ≥ 3.3, multi-team), or the global name.
pub fn team_variable_env_name(team: Option<&str>, key: &str) -> String {
    match team {
        Some(t) => format!(
            "{VAR_PREFIX}_{}{ENV_TEAM_SEP}{}",
            py_upper(t),
            py_upper(key)
        ),
        None => variable_env_name(key),
    }
}

/// Why Airflow in multi-team mode never reads `id` for a team from Secrets Manager: its
/// `SecretsManagerBackend` refuses ids containing the team separator `--`.
pub fn team_refusal(id: &str) -> Option<String> {
    id.contains("--").then(|| {
        format!(
            "{id:?} contains \"--\", which separates team and id in team-scoped secret names: Airflow's SecretsManagerBackend refuses such ids in multi-team mode"
        )
    })
}

/// Why a team-scoped env var cannot carry `id`: Airflow's `EnvironmentVariablesBackend`
/// refuses ids containing `___` in multi-team mode.
pub fn team_env_refusal(id: &str) -> Option<String> {
    id.contains(ENV_TEAM_SEP).then(|| {
        format!(
            "{id:?} contains \"___\", and Airflow's EnvironmentVariablesBackend refuses such ids in multi-team mode; deliver it with injection KubernetesBackend"
        )
    })
}

/// `AIRFLOW__<SECTION>__<KEY>`, with `.` in the section turned into `_` as Airflow does.
pub fn config_env_name(section: &str, key: &str) -> String {
    format!(
        "AIRFLOW__{}__{}",
        py_upper(&section.replace('.', "_")),
        py_upper(key)
    )
}

/// Why a name cannot be carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "environment variable name {name:?} has a character Kubernetes does not accept in env names ({bad:?}; allowed: printable ASCII except '=')"
    )]
    EnvName { name: String, bad: char },
    #[error(
        "{name:?} cannot be a Secret key (allowed: letters, digits, '-', '_', '.', at most 253 characters); use target.injection Env"
    )]
    SecretKey { name: String },
}

/// Kubernetes accepts an env var name of printable ASCII except `=` (relaxed validation, beta and
/// on by default from 1.32, GA in 1.34).
pub fn check_env_name(name: &str) -> Result<(), NameError> {
    match name.chars().find(|c| !(' '..='~').contains(c) || *c == '=') {
        Some(bad) => Err(NameError::EnvName {
            name: name.to_string(),
            bad,
        }),
        None => Ok(()),
    }
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters. Keys that pass this can also be
/// loaded with `envFrom`.
pub fn is_secret_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names_are_airflow_3_3s() {
        assert_eq!(
            team_connection_env_name(Some("data-eng"), "my_db"),
            "AIRFLOW_CONN__DATA-ENG___MY_DB"
        );
        assert_eq!(
            team_variable_env_name(Some("ml"), "flag"),
            "AIRFLOW_VAR__ML___FLAG"
        );
        assert_eq!(team_connection_env_name(None, "x"), "AIRFLOW_CONN_X");
        assert!(
            team_refusal("a--b")
                .unwrap()
                .contains("SecretsManagerBackend")
        );
        assert_eq!(team_refusal("a___b"), None);
        assert!(
            team_env_refusal("a___b")
                .unwrap()
                .contains("EnvironmentVariablesBackend")
        );
        assert_eq!(team_env_refusal("a__b"), None);
    }

    #[test]
    fn names_are_prefix_plus_python_upper() {
        assert_eq!(
            connection_env_name("my_postgres"),
            "AIRFLOW_CONN_MY_POSTGRES"
        );
        // No '-' to '_' mapping: Airflow looks for AIRFLOW_CONN_MY-DB.
        assert_eq!(connection_env_name("my-db"), "AIRFLOW_CONN_MY-DB");
        assert_eq!(connection_env_name("team/db.v2"), "AIRFLOW_CONN_TEAM/DB.V2");
        assert_eq!(
            variable_env_name("Feature_Flags"),
            "AIRFLOW_VAR_FEATURE_FLAGS"
        );
        // Unicode upper-casing as Python's str.upper does it.
        assert_eq!(variable_env_name("straße"), "AIRFLOW_VAR_STRASSE");
        assert_eq!(variable_env_name("ﬁle"), "AIRFLOW_VAR_FILE");
        assert_eq!(variable_env_name("café"), "AIRFLOW_VAR_CAFÉ");
        assert_eq!(
            config_env_name("smtp", "smtp_password"),
            "AIRFLOW__SMTP__SMTP_PASSWORD"
        );
        assert_eq!(
            config_env_name("providers.amazon", "x"),
            "AIRFLOW__PROVIDERS_AMAZON__X"
        );
    }

    #[test]
    fn env_names_kubernetes_accepts() {
        assert!(check_env_name("AIRFLOW_CONN_MY-DB").is_ok());
        assert!(check_env_name("AIRFLOW_CONN_A#!():/\\").is_ok());
        assert!(matches!(
            check_env_name("AIRFLOW_VAR_CAFÉ"),
            Err(NameError::EnvName { bad: 'É', .. })
        ));
        assert!(check_env_name("AIRFLOW_VAR_A=B").is_err());
        assert!(check_env_name("AIRFLOW_VAR_A\tB").is_err());
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("AIRFLOW_CONN_MY-DB.V2"));
        assert!(!is_secret_key("AIRFLOW_CONN_TEAM/DB"));
        assert!(!is_secret_key("AIRFLOW_CONN_A:B"));
        assert!(!is_secret_key(""));
        assert!(!is_secret_key(&"A".repeat(254)));
    }
}
