//! Property tests of the conversions fed by tenants' input (issue 14, "bad input"): arbitrary
//! secrets, ids, prefixes and lookup patterns never panic, and cheap invariants hold. Case
//! counts stay at proptest's default (256) or lower so that `cargo test --lib` spends a few
//! seconds here; `fuzz/` (docs/reliability.md) runs the same entry points for as long as asked.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use super::connection::{
    FIELDS, Format, Rejection, connection_value, default_aliases, plain_value,
};
use super::names::*;
use super::path::*;
use super::pattern::{LookupPattern, MAX_PATTERN_CHARS};

/// Text that is mostly what tenants write, with the odd control, non-ASCII or astral character.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,24}",
        1 => "[\\x00-\\x20\u{80}-\u{ff}\u{2028}\u{feff}ßﬁİı\u{212a}\u{1F600}a-z/_.:-]{0,16}",
        1 => any::<String>(),
    ]
}

/// Keys of a JSON connection secret: every alias Airflow knows, and some it does not.
fn key() -> impl Strategy<Value = String> {
    let mut known: Vec<String> = FIELDS
        .iter()
        .flat_map(|f| default_aliases(f).iter().map(|a| a.to_string()))
        .collect();
    known.extend(["dbname", "User", "", "extra_dejson"].map(String::from));
    prop_oneof![3 => proptest::sample::select(known), 1 => "[a-zA-Z_]{1,8}"]
}

/// JSON values: scalars (numbers of every shape, strings holding a canary) and small nestings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[0-9 +_.-]{0,6}".prop_map(Value::from),
        "[ -~]{0,8}".prop_map(|s| Value::from(format!("CANARY{s}"))),
        Just(Value::from("{\"a\": 1}")),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{1,4}", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON connection secret as text, in its own key order (duplicates kept), with surrounding
/// whitespace.
fn json_secret() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((key(), json_value()), 0..8),
        "[ \t\n]{0,2}",
    )
        .prop_map(|(pairs, ws)| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}: {v}", Value::from(k.as_str())))
                .collect();
            format!("{ws}{{{}}}{ws}", body.join(", "))
        })
}

fn conn_words() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
    proptest::collection::btree_map(
        prop_oneof![
            3 => proptest::sample::select(vec!["login", "user", "host", "extra", "port"]).prop_map(String::from),
            1 => "[a-z]{1,6}",
        ],
        proptest::collection::vec(key(), 0..3),
        0..2,
    )
}

/// Messages and warnings never carry a value.
fn texts(r: &Result<super::connection::ConnectionValue, Rejection>) -> String {
    match r {
        Ok(c) => c.warnings.join("\n"),
        Err(e) => e.to_string(),
    }
}

proptest! {
    #[test]
    fn any_secret_converts_or_is_refused(secret in text(), words in conn_words()) {
        let r = connection_value(&secret, &words);
        if secret.contains('\0') {
            prop_assert!(matches!(r, Err(Rejection::Unrepresentable(_))));
        }
        if let Ok(c) = &r && c.format == Format::Uri {
            prop_assert_eq!(&c.value, &secret, "URIs are copied byte for byte");
        }
        prop_assert_eq!(plain_value(&secret).is_ok(), !secret.contains('\0'));
        if let Ok(v) = plain_value(&secret) {
            prop_assert_eq!(v, secret);
        }
    }

    #[test]
    fn json_secrets_become_the_seven_fields(secret in json_secret(), words in conn_words()) {
        let r = connection_value(&secret, &words);
        prop_assert!(!texts(&r).contains("CANARY"), "a value reached a message: {}", texts(&r));
        let unknown = words.keys().any(|f| f != "user" && !FIELDS.contains(&f.as_str()));
        match r {
            Err(Rejection::Invalid(_)) => prop_assert!(unknown),
            Err(Rejection::Unrepresentable(_)) => prop_assert!(secret.contains('\0')),
            Err(Rejection::Absent(_)) => prop_assert!(!unknown),
            Ok(c) => {
                prop_assert!(!unknown);
                prop_assert_eq!(c.format, Format::Json);
                let out: serde_json::Map<String, Value> = serde_json::from_str(&c.value).unwrap();
                prop_assert_eq!(out.keys().map(String::as_str).collect::<Vec<_>>(), FIELDS.to_vec());
                // Every value comes from the secret, under one of the field's aliases.
                let input: serde_json::Map<String, Value> = serde_json::from_str(&secret).unwrap();
                for (field, v) in &out {
                    if v.is_null() {
                        continue;
                    }
                    let field = field.as_str();
                    let extra = words.iter().filter(|(f, _)| *f == field || (field == "login" && *f == "user"));
                    let aliases: Vec<&str> = default_aliases(field)
                        .iter()
                        .copied()
                        .chain(extra.flat_map(|(_, w)| w.iter().map(String::as_str)))
                        .collect();
                    prop_assert!(
                        aliases.iter().any(|a| input.get(*a) == Some(v)),
                        "{} = {} is not from the secret", field, v
                    );
                }
            }
        }
    }

    #[test]
    fn env_names_are_prefix_and_python_upper(id in text(), team in "[a-zA-Z0-9_-]{3,12}") {
        let conn = connection_env_name(&id);
        prop_assert_eq!(&conn, &format!("{CONN_PREFIX}{}", id.to_uppercase()));
        prop_assert_eq!(variable_env_name(&id), format!("{VAR_PREFIX}{}", id.to_uppercase()));
        let scoped = team_connection_env_name(Some(&team), &id);
        let expected_prefix = format!("{CONN_PREFIX}_{}{ENV_TEAM_SEP}", team.to_uppercase());
        prop_assert!(scoped.starts_with(&expected_prefix));
        prop_assert_eq!(team_connection_env_name(None, &id), conn);
        prop_assert_eq!(team_refusal(&id).is_some(), id.contains("--"));
        prop_assert_eq!(team_env_refusal(&id).is_some(), id.contains("___"));
        let config = config_env_name(&id, &id);
        prop_assert!(config.starts_with("AIRFLOW__"));
    }

    #[test]
    fn kubernetes_names_accept_exactly_what_they_say(name in text()) {
        let printable = name.chars().all(|c| (' '..='~').contains(&c) && c != '=');
        prop_assert_eq!(check_env_name(&name).is_ok(), printable);
        if let Err(NameError::EnvName { bad, .. }) = check_env_name(&name) {
            prop_assert!(name.contains(bad));
        }
        // A Secret key is always a valid env name (envFrom loads it).
        if is_secret_key(&name) {
            prop_assert!(check_env_name(&name).is_ok());
            prop_assert!(name.len() <= 253);
        }
    }

    #[test]
    fn secret_names_and_ids_invert(prefix in text(), sep in "[/:_-]{0,3}", id in text(), name in text()) {
        let base = base_prefix(&prefix, &sep);
        prop_assert!(prefix.starts_with(base));
        prop_assert!(!base.ends_with(|c| sep.contains(c)));
        if !id.is_empty() {
            let built = secret_name(&prefix, &sep, &id);
            prop_assert_eq!(id_for_secret(&prefix, &sep, &built), Some(id.as_str()));
            if let Some(filter) = list_filter(&prefix, &sep) {
                prop_assert!(built.starts_with(&filter));
            }
            let team = "team";
            let scoped = format!("{team}{TEAM_SEP}{id}");
            prop_assert_eq!(team_scoped_id(team, &scoped), Some(id.as_str()));
        }
        // Whatever name discovery lists, the id it finds is one Airflow reads that name for.
        if let Some(found) = id_for_secret(&prefix, &sep, &name) {
            prop_assert!(!found.is_empty());
            prop_assert_eq!(secret_name(&prefix, &sep, found), name.clone());
        }
        if let Some(found) = team_scoped_id("team", &name) {
            prop_assert!(!found.is_empty());
        }
    }
}

/// Pattern text made of regex syntax: what the front end's grammar and error paths see.
fn pattern_text() -> impl Strategy<Value = String> {
    let pieces = vec![
        "(", ")", "[", "]", "{", "}", "?", "*", "+", "|", "^", "$", "\\", ".", "-", ",", ":", "!",
        "<", "=", ">", "#", " ", "\n", "'", "a", "b", "k", "Z", "0", "1", "9", "_", "é",
        "\u{212a}", "(?", "(?P<", "(?P=", "(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?(", "(?i",
        "(?a", "(?x", "(?-i:", "\\N{", "\\u00", "\\x4", "\\0", "\\1", "\\d", "\\w", "\\s", "\\b",
        "\\B", "\\A", "\\Z", "[^", "[:a:]", "&&", "{2,3}", "{,4}", "*+", "+?", "}x",
    ];
    prop_oneof![
        6 => proptest::collection::vec(proptest::sample::select(pieces), 0..24)
            .prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => "[ -~]{0,16}",
    ]
}

/// Patterns from a subset whose meaning the `regex` crate shares on ASCII ids: literals,
/// classes, `.`, `\d`, `\w`, `\s`, repeats (greedy or lazy), alternations and groups.
fn simple_pattern() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        "[a-dA-D0-9_ .-]".prop_map(|c| regex::escape(&c)),
        Just(".".to_string()),
        Just("[a-c]".to_string()),
        Just("[^b0-9]".to_string()),
        Just("\\d".to_string()),
        Just("\\w".to_string()),
        Just("\\s".to_string()),
    ];
    let quantifier =
        proptest::sample::select(vec!["", "", "", "*", "+", "?", "{1,2}", "*?", "+?", "{2}"]);
    let piece = (atom, quantifier).prop_map(|(a, q)| format!("{a}{q}"));
    let seq = proptest::collection::vec(piece, 1..4).prop_map(|p| p.concat());
    seq.prop_recursive(2, 12, 3, |inner| {
        let alt = proptest::collection::vec(inner, 1..3).prop_map(|s| s.join("|"));
        (
            alt,
            proptest::sample::select(vec!["(", "(?:"]),
            proptest::sample::select(vec!["", "*", "?", "+"]),
            "[a-c]{0,2}",
        )
            .prop_map(|(alt, open, q, tail)| format!("{open}{alt}){q}{tail}"))
    })
}

fn ascii_id() -> impl Strategy<Value = String> {
    "[a-dA-D0-9_ \t\n.-]{0,10}"
}

proptest! {
    #[test]
    fn any_pattern_compiles_or_is_refused(p in pattern_text(), id in "[ -~\n]{0,12}", other in text()) {
        match LookupPattern::new(&p) {
            Ok(lp) => {
                prop_assert_eq!(lp.as_python(), p.as_str());
                // Decided (or refused for backtracking), never a panic.
                let _ = lp.matches(&id);
                if !other.is_ascii() {
                    prop_assert!(lp.matches(&other).is_err());
                }
            }
            Err(e) => {
                let length = p.chars().count();
                prop_assert!(e.position().is_none_or(|at| at <= length), "{} at {:?} of {}", e, e.position(), length);
                prop_assert!(!e.to_string().is_empty());
                if length > MAX_PATTERN_CHARS {
                    prop_assert_eq!(e.kind(), super::pattern::PatternErrorKind::TooLarge);
                }
            }
        }
    }

    #[test]
    fn simple_patterns_match_as_the_regex_crate_does(p in simple_pattern(), ids in proptest::collection::vec(ascii_id(), 1..6)) {
        let lp = LookupPattern::new(&p).map_err(|e| TestCaseError::fail(format!("{p:?}: {e}")))?;
        let reference = regex::Regex::new(&format!("(?i)^(?:{p})")).unwrap();
        for id in ids {
            prop_assert_eq!(lp.matches(&id).unwrap(), reference.is_match(&id), "{:?} on {:?}", p, id);
        }
    }
}
