//! How a Secrets Manager secret becomes the value of `AIRFLOW_CONN_<ID>`, and of
//! `AIRFLOW_VAR_<KEY>` / `AIRFLOW__SECTION__KEY`.
//!
//! Airflow's `SecretsManagerBackend.get_conn_value` returns the secret untouched unless
//! `secret.strip()` starts with `{`; then it `json.loads` the secret, keeps exactly the fields
//! `login, password, host, port, schema, conn_type, extra` — each taken from the *first* key, in
//! the secret's own key order, that is one of the field's aliases — drops every other key, and
//! `json.dumps` the result. The environment backend then parses that string exactly as it would
//! have parsed the backend's return value. So:
//!
//! - URI secrets are copied byte for byte (parsing is then identical by construction, including
//!   Airflow-version-dependent typing of query parameters);
//! - JSON secrets are standardised here with the same alias table and key-order rule, and every
//!   value is copied as its original JSON text (no re-typing, no re-encoding of numbers);
//! - what Airflow would treat as "not found" is reported instead of injected.
//!
//! Messages never contain values; they name fields and keys only.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use super::py_strip;

/// The seven fields of a standardised connection, in the order the backend writes them.
pub const FIELDS: [&str; 7] = [
    "login",
    "password",
    "host",
    "port",
    "schema",
    "conn_type",
    "extra",
];

/// The backend's alias table (`possible_words_for_conn_fields`).
pub fn default_aliases(field: &str) -> &'static [&'static str] {
    match field {
        "login" => &["login", "user", "username", "user_name"],
        "password" => &["password", "pass", "key"],
        "host" => &["host", "remote_host", "server"],
        "port" => &["port"],
        "schema" => &["database", "schema"],
        "conn_type" => &["conn_type", "conn_id", "connection_type", "engine"],
        "extra" => &["extra"],
        _ => &[],
    }
}

/// Why a secret is not injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Airflow itself would treat the entry as absent (or fail to build it); the reason.
    Absent(String),
    /// A Kubernetes Secret / environment variable cannot carry the value; the reason.
    Unrepresentable(String),
    /// The binding's own configuration makes the entry unusable (e.g. bad `extraConnWords`).
    Invalid(String),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Absent(m) | Rejection::Unrepresentable(m) | Rejection::Invalid(m) => {
                f.write_str(m)
            }
        }
    }
}

/// How the connection was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Uri,
    Json,
}

/// A connection ready to be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionValue {
    /// The environment variable's value.
    pub value: String,
    pub format: Format,
    /// Things Airflow accepts but users usually do not mean (dropped keys, version-dependent
    /// parsing). Never contain values.
    pub warnings: Vec<String>,
}

/// Converts a connection secret's `SecretString` into the env var value.
pub fn connection_value(
    secret: &str,
    extra_conn_words: &BTreeMap<String, Vec<String>>,
) -> Result<ConnectionValue, Rejection> {
    check_env_value(secret)?;
    let stripped = py_strip(secret);
    if stripped.is_empty() {
        return Err(Rejection::Absent(
            "the secret is empty or only whitespace; Airflow treats it as not found".into(),
        ));
    }
    if stripped.starts_with('{') {
        standardise_json(secret, extra_conn_words)
    } else {
        uri_value(secret, stripped)
    }
}

/// The value of a variable or config option: the `SecretString` verbatim (an empty string is a
/// value, as in Airflow).
pub fn plain_value(secret: &str) -> Result<String, Rejection> {
    check_env_value(secret)?;
    Ok(secret.to_string())
}

fn check_env_value(secret: &str) -> Result<(), Rejection> {
    if secret.contains('\0') {
        return Err(Rejection::Unrepresentable(
            "the value contains a NUL character, which no environment variable can carry".into(),
        ));
    }
    Ok(())
}

fn uri_value(secret: &str, stripped: &str) -> Result<ConnectionValue, Rejection> {
    if stripped.matches("://").count() > 2 {
        return Err(Rejection::Absent(
            "the URI contains '://' more than twice; Airflow rejects it as an invalid connection string".into(),
        ));
    }
    let mut warnings = Vec::new();
    if !stripped.contains("://") {
        warnings.push("the value is neither JSON nor a URI with a scheme (no '://'); Airflow parses it as a URI anyway".into());
    }
    Ok(ConnectionValue {
        value: secret.to_string(),
        format: Format::Uri,
        warnings,
    })
}

/// The keys of a JSON object in document order, each with its raw JSON text; a duplicated key
/// keeps its first position and its last value, as Python's `json.loads` does.
struct OrderedPairs(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedPairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedPairs, A::Error> {
                let mut pairs: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    match pairs.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => pairs.push((k, v)),
                    }
                }
                Ok(OrderedPairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

fn aliases(
    extra_conn_words: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<(&'static str, Vec<String>)>, Rejection> {
    let mut table: Vec<(&'static str, Vec<String>)> = FIELDS
        .iter()
        .map(|f| {
            (
                *f,
                default_aliases(f).iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    for (field, words) in extra_conn_words {
        // Airflow maps the old spelling `user` onto `login`; any other unknown field raises
        // KeyError on every JSON lookup.
        let field = if field == "user" {
            "login"
        } else {
            field.as_str()
        };
        let Some((_, list)) = table.iter_mut().find(|(f, _)| *f == field) else {
            return Err(Rejection::Invalid(format!(
                "extraConnWords has unknown field {field:?} (allowed: login, user, password, host, port, schema, conn_type, extra)"
            )));
        };
        list.extend(words.iter().cloned());
    }
    Ok(table)
}

fn standardise_json(
    secret: &str,
    extra_conn_words: &BTreeMap<String, Vec<String>>,
) -> Result<ConnectionValue, Rejection> {
    let table = aliases(extra_conn_words)?;
    let OrderedPairs(pairs) = serde_json::from_str(secret).map_err(|e| {
        Rejection::Absent(format!(
            "the secret starts with '{{' but is not valid JSON (line {}, column {}); Airflow treats it as not found",
            e.line(),
            e.column()
        ))
    })?;

    let mut warnings = Vec::new();
    let mut out = String::from("{");
    // For each field, the first key (in the secret's order) that is one of its aliases.
    let mut chosen: Vec<(&str, Option<(&str, &RawValue)>)> = Vec::with_capacity(FIELDS.len());
    for (i, (field, words)) in table.iter().enumerate() {
        let hit = pairs
            .iter()
            .find(|(k, _)| words.iter().any(|w| w == k))
            .map(|(k, v)| (k.as_str(), v.as_ref()));
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&serde_json::to_string(field).expect("a field name serialises"));
        out.push_str(": ");
        out.push_str(hit.map(|(_, raw)| raw.get()).unwrap_or("null"));
        chosen.push((field, hit));
    }
    out.push('}');
    let chosen_keys: Vec<&str> = chosen
        .iter()
        .filter_map(|(_, hit)| hit.map(|(k, _)| k))
        .collect();

    let used: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| table.iter().any(|(_, words)| words.iter().any(|w| w == k)))
        .collect();
    let dropped: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !used.contains(k))
        .collect();
    if !dropped.is_empty() {
        warnings.push(format!(
            "keys Airflow drops (not moved into extra): {}",
            describe_keys(&dropped)
        ));
    }
    let shadowed: Vec<&str> = used
        .iter()
        .copied()
        .filter(|k| !chosen_keys.contains(k))
        .collect();
    if !shadowed.is_empty() {
        warnings.push(format!(
            "keys ignored because an earlier key is an alias of the same field: {}",
            describe_keys(&shadowed)
        ));
    }

    for (field, hit) in &chosen {
        let Some((_, raw)) = hit else { continue };
        let value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| {
            Rejection::Absent(format!(
                "field {field:?} holds a JSON value Airflow cannot use"
            ))
        })?;
        check_field(field, &value, &mut warnings)?;
    }
    if chosen
        .iter()
        .all(|(f, hit)| *f != "conn_type" || hit.is_none())
    {
        warnings.push(
            "no conn_type (or alias: conn_id, connection_type, engine): Airflow cannot pick a hook"
                .into(),
        );
    }
    Ok(ConnectionValue {
        value: out,
        format: Format::Json,
        warnings,
    })
}

fn describe_keys(keys: &[&str]) -> String {
    let plain = |k: &&str| {
        k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if keys.iter().all(plain) {
        keys.join(", ")
    } else {
        format!("{} key(s)", keys.len())
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match v {
        Null => false,
        Bool(b) => *b,
        Number(n) => n.as_f64() != Some(0.0),
        String(s) => !s.is_empty(),
        Array(a) => !a.is_empty(),
        Object(o) => !o.is_empty(),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value::*;
    match v {
        Null => "null",
        Bool(_) => "a boolean",
        Number(_) => "a number",
        String(_) => "a string",
        Array(_) => "a list",
        Object(_) => "an object",
    }
}

/// What Airflow's `Connection.from_json` and `get_uri` do with each field (see the module docs).
fn check_field(
    field: &str,
    v: &serde_json::Value,
    warnings: &mut Vec<String>,
) -> Result<(), Rejection> {
    use serde_json::Value;
    if !truthy(v) {
        return Ok(()); // falsy values are dropped or skipped by Airflow
    }
    match field {
        "port" => match v {
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() != 0.0) => {
                warnings.push("port is not a whole number; Airflow truncates it with int()".into());
                Ok(())
            }
            Value::Number(_) => Ok(()),
            Value::Bool(_) => {
                warnings.push("port is a boolean; Airflow turns true into port 1".into());
                Ok(())
            }
            Value::String(s) => match python_int(s) {
                IntParse::Ok => Ok(()),
                IntParse::Uncertain => {
                    warnings.push("port uses non-ASCII digits; Airflow's int() may accept them".into());
                    Ok(())
                }
                IntParse::Invalid => Err(Rejection::Absent(
                    "port is not an integer; Airflow raises ValueError and treats the connection as not found".into(),
                )),
            },
            other => Err(Rejection::Absent(format!(
                "port is {}; Airflow cannot convert it with int() and treats the connection as not found",
                kind(other)
            ))),
        },
        "extra" => {
            match v {
                Value::Object(_) => {}
                Value::String(s) => {
                    if !matches!(serde_json::from_str::<Value>(s), Ok(Value::Object(_))) {
                        warnings.push("extra is a string that is not a JSON object: Airflow core 3.x rejects the connection, the Task SDK keeps the string".into());
                    }
                }
                other => warnings.push(format!(
                    "extra is {}, not an object: Airflow core 3.x rejects the connection, the Task SDK keeps it as a string",
                    kind(other)
                )),
            }
            Ok(())
        }
        _ => match v {
            Value::String(_) => Ok(()),
            other => Err(Rejection::Absent(format!(
                "{field} is {}, not a string; Airflow fails to build the connection and treats it as not found",
                kind(other)
            ))),
        },
    }
}

enum IntParse {
    Ok,
    Invalid,
    Uncertain,
}

/// Whether Python's `int(s)` accepts `s`: surrounding whitespace, an optional sign, digits with
/// single `_` between them.
fn python_int(s: &str) -> IntParse {
    let t = py_strip(s);
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    if t.is_empty() {
        return IntParse::Invalid;
    }
    let mut prev_digit = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            prev_digit = true;
        } else if c == '_' && prev_digit {
            prev_digit = false;
        } else if c.is_numeric() {
            return IntParse::Uncertain;
        } else {
            return IntParse::Invalid;
        }
    }
    if prev_digit {
        IntParse::Ok
    } else {
        IntParse::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn conv(secret: &str) -> Result<ConnectionValue, Rejection> {
        connection_value(secret, &BTreeMap::new())
    }

    fn fields(secret: &str) -> Value {
        let c = conv(secret).unwrap_or_else(|e| panic!("{secret}: {e}"));
        assert_eq!(c.format, Format::Json);
        serde_json::from_str(&c.value).unwrap()
    }

    #[test]
    fn uri_secrets_are_copied_byte_for_byte() {
        for uri in [
            "postgresql://user:p%40ss@db.example.com:5432/mydb",
            "postgres://u:pw@h.example.com:5432/db?sslmode=require&connect_timeout=10",
            "my-conn-type://login:password@host:1234/schema?param1=val1&param2=val2",
            "http://https%3A%2F%2Fapi.example.com:443/v1",
            "  mysql://us%3Aer:p%40ss%2Fw%3Ard@host:3306/my%20db\n",
            "sqlite://:@/%2Ftmp%2Fdb.sqlite",
            // U+FEFF is not whitespace for Python: this is a URI for Airflow, not JSON.
            "\u{feff}{\"conn_type\": \"x\"}",
        ] {
            let c = conv(uri).unwrap();
            assert_eq!(c.value, uri);
            assert_eq!(c.format, Format::Uri);
        }
    }

    #[test]
    fn v3_engine_username_database_aliases() {
        let f = fields(
            r#"{"engine":"postgresql","username":"admin","password":"s3cr3t","host":"db.internal","port":"5432","database":"analytics"}"#,
        );
        assert_eq!(
            f,
            json!({"login": "admin", "password": "s3cr3t", "host": "db.internal", "port": "5432", "schema": "analytics", "conn_type": "postgresql", "extra": null})
        );
    }

    #[test]
    fn v4_rds_shape_drops_unknown_keys() {
        let c = conv(r#"{"username":"admin","password":"pw!","engine":"postgres","host":"x.rds.amazonaws.com","port":5432,"dbname":"app","dbInstanceIdentifier":"x"}"#).unwrap();
        let f: Value = serde_json::from_str(&c.value).unwrap();
        assert_eq!(f["schema"], Value::Null, "dbname is not an alias of schema");
        assert_eq!(f["port"], json!(5432));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("dbname") && w.contains("dbInstanceIdentifier"))
        );
    }

    #[test]
    fn values_keep_their_json_text_and_type() {
        let c = conv(r#"{"conn_type":"aws","extra":{"region_name":"eu-west-1","n":1.50,"big":123456789012345678901234567890}}"#).unwrap();
        assert!(c.value.contains(r#""extra": {"region_name":"eu-west-1","n":1.50,"big":123456789012345678901234567890}"#), "{}", c.value);
        let c =
            conv(r#"{"conn_type":"http","host":"api.example.com","extra":"{\"timeout\": 30}"}"#)
                .unwrap();
        assert!(
            c.value.contains(r#""extra": "{\"timeout\": 30}""#),
            "extra given as a string stays a string"
        );
        let c = conv(r#"{"conn_type":"x","password":"p\u00e4ss \ud83d\ude00"}"#).unwrap();
        assert!(c.value.contains(r#""password": "p\u00e4ss \ud83d\ude00""#));
    }

    #[test]
    fn first_alias_in_the_secrets_key_order_wins() {
        // V8: conn_id is an alias of conn_type and comes first.
        assert_eq!(
            fields(r#"{"conn_id":"my_db","conn_type":"postgres","host":"h"}"#)["conn_type"],
            json!("my_db")
        );
        // V9
        assert_eq!(
            fields(r#"{"user":"a","login":"b","conn_type":"postgres"}"#)["login"],
            json!("a")
        );
        // V10: key is an alias of password.
        assert_eq!(
            fields(r#"{"conn_type":"aws","login":"AKIAEXAMPLE","key":"wJalrXUtnFEMI"}"#)["password"],
            json!("wJalrXUtnFEMI")
        );
        // V7
        let f =
            fields(r#"{"conn_type":"mysql","user":"bob","pass":"x y","server":"h","foo":"bar"}"#);
        assert_eq!(
            (f["login"].clone(), f["password"].clone(), f["host"].clone()),
            (json!("bob"), json!("x y"), json!("h"))
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_at_the_first_position() {
        // {"user":"a","login":"b","user":"c"}: user is first (position) with value c.
        assert_eq!(
            fields(r#"{"user":"a","login":"b","user":"c"}"#)["login"],
            json!("c")
        );
    }

    #[test]
    fn key_matching_is_case_sensitive() {
        assert_eq!(fields(r#"{"User":"a","Host":"h"}"#)["login"], Value::Null);
    }

    #[test]
    fn extra_conn_words_extend_the_aliases() {
        let mut words = BTreeMap::new();
        words.insert("user".to_string(), vec!["account".to_string()]);
        words.insert("host".to_string(), vec!["endpoint".to_string()]);
        let c = connection_value(r#"{"endpoint":"e","account":"acc","host":"h"}"#, &words).unwrap();
        let f: Value = serde_json::from_str(&c.value).unwrap();
        assert_eq!(f["login"], json!("acc"));
        assert_eq!(
            f["host"],
            json!("e"),
            "first in the secret's key order, not the alias list's"
        );
        words.insert("description".to_string(), vec!["d".to_string()]);
        assert!(matches!(
            connection_value("{}", &words),
            Err(Rejection::Invalid(_))
        ));
    }

    #[test]
    fn output_has_exactly_the_seven_fields() {
        let f = fields("{}");
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, FIELDS);
        assert!(f.as_object().unwrap().values().all(Value::is_null));
    }

    #[test]
    fn what_airflow_treats_as_absent() {
        for (secret, why) in [
            ("", "empty"),
            ("   \n\t", "empty"),
            ("{not json", "not valid JSON"),
            (r#"{"a": 1} trailing"#, "not valid JSON"),
            ("\u{a0}{\"conn_type\": \"x\"}", "not valid JSON"),
            ("\u{1c}{\"conn_type\": \"x\"}", "not valid JSON"),
            (
                r#"{"conn_type":"postgres","host":"h","password":12345}"#,
                "password is a number",
            ),
            (
                r#"{"conn_type":"postgres","host":"h","port":"abc"}"#,
                "port is not an integer",
            ),
            (
                r#"{"conn_type":"postgres","port":"5432.0"}"#,
                "port is not an integer",
            ),
            (r#"{"conn_type":"postgres","port":[1]}"#, "port is a list"),
            (r#"{"conn_type":["a"]}"#, "conn_type is a list"),
            ("a://b://c://d", "more than twice"),
        ] {
            match conv(secret) {
                Err(Rejection::Absent(m)) => assert!(m.contains(why), "{secret:?}: {m}"),
                other => panic!("{secret:?}: expected Absent({why}), got {other:?}"),
            }
        }
    }

    #[test]
    fn ports_python_int_accepts() {
        for p in [
            r#""5432""#,
            r#"" 5432 ""#,
            r#""+5_432""#,
            "5432",
            "5432.9",
            "true",
            "0",
            r#""""#,
            "null",
            "false",
            "[]",
        ] {
            let secret = format!(r#"{{"conn_type":"postgres","port":{p}}}"#);
            assert!(conv(&secret).is_ok(), "{secret}");
        }
    }

    #[test]
    fn falsy_non_strings_are_dropped_not_rejected() {
        // V14: port 0 and extra "" are falsy and dropped by from_json.
        let c = conv(r#"   {"conn_type":"postgres","host":"h","port":0,"extra":""}"#).unwrap();
        let f: Value = serde_json::from_str(&c.value).unwrap();
        assert_eq!(f["port"], json!(0));
        assert_eq!(f["extra"], json!(""));
    }

    #[test]
    fn version_dependent_extra_is_a_warning() {
        let c = conv(r#"{"conn_type":"postgres","host":"h","extra":"not json"}"#).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("core 3.x rejects")));
    }

    #[test]
    fn nul_cannot_be_carried() {
        assert!(matches!(
            conv("postgres://h/\0"),
            Err(Rejection::Unrepresentable(_))
        ));
        assert!(matches!(
            plain_value("a\0b"),
            Err(Rejection::Unrepresentable(_))
        ));
    }

    #[test]
    fn plain_values_are_verbatim() {
        for v in [
            "",
            "  {\"a\": 1}\n",
            "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
            "ünïcödé",
        ] {
            assert_eq!(plain_value(v).unwrap(), v);
        }
    }

    #[test]
    fn messages_never_contain_values() {
        let canary = "CANARY-s3cr3t-Ω";
        for secret in [
            format!(r#"{{"conn_type":"postgres","port":"{canary}"}}"#),
            format!(r#"{{"conn_type":"postgres","password":12345,"host":"{canary}"}}"#),
            format!(r#"{{"{canary}":"x","conn_type":"y"}}"#),
            format!("{{{canary}"),
            format!("a://{canary}://b://c"),
            format!(r#"{{"conn_type":"postgres","extra":"{canary}"}}"#),
        ] {
            let text = match conv(&secret) {
                Ok(c) => c.warnings.join("\n"),
                Err(e) => e.to_string(),
            };
            assert!(!text.contains("CANARY"), "{text}");
        }
    }
}
