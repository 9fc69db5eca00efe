//! Env names, Secret keys, secret names from prefixes and their inverse (discovery), team-scoped
//! ids. Input: `prefix \0 sep \0 id \0 name`. Never panics; discovery inverts the construction.
#![no_main]

use airflow_secrets_operator::airflow::names::*;
use airflow_secrets_operator::airflow::path::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\0');
    let (prefix, sep, id, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    for env in [
        connection_env_name(id),
        variable_env_name(id),
        team_connection_env_name(Some(sep), id),
        team_variable_env_name(Some(sep), id),
        config_env_name(prefix, id),
    ] {
        let _ = check_env_name(&env);
        if is_secret_key(&env) {
            assert!(check_env_name(&env).is_ok());
        }
    }
    let _ = (team_refusal(id), team_env_refusal(id));
    if !id.is_empty() {
        let built = secret_name(prefix, sep, id);
        assert_eq!(id_for_secret(prefix, sep, &built), Some(id));
        if let Some(filter) = list_filter(prefix, sep) {
            assert!(built.starts_with(&filter));
        }
    }
    if let Some(found) = id_for_secret(prefix, sep, name) {
        assert_eq!(secret_name(prefix, sep, found), name);
    }
    let _ = team_scoped_id(sep, name);
});
