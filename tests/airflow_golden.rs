//! Golden test against real Apache Airflow, every case against each version of [`AIRFLOWS`]
//! (3.1.8 and 3.3.2, each with amazon provider 9.39.0, in the venvs the test assets build):
//! every secret is stored in the Secrets Manager emulator; Airflow's `SecretsManagerBackend`
//! reads it there, and Airflow's `EnvironmentVariablesBackend` reads what this crate turns it
//! into. Both must give the same connection, field by field, for the core and the Task SDK
//! Connection classes — and whenever we refuse to inject an entry as "absent", Airflow must not
//! find it through Secrets Manager either. A failure names the Airflow version it happened with.
//!
//! An extra corpus can be given with `ASO_GOLDEN_CORPUS=file.json`
//! (`{"connections": [{"id": .., "secret": ..}], "variables": [..]}`).

mod support;

use std::collections::BTreeMap;

use airflow_secrets_operator::airflow::connection::{Rejection, connection_value, plain_value};
use airflow_secrets_operator::airflow::names::{
    check_env_name, connection_env_name, variable_env_name,
};
use airflow_secrets_operator::api::{EntryKind, EntryState, Injection as InjectionMode};
use airflow_secrets_operator::entries::{Fetched, ResolvedEntry};
use airflow_secrets_operator::plan::content::{desired_secret, secret_key_for};
use serde_json::{Value, json};
use support::*;

/// One Airflow of the version matrix: its version and the variable naming its venv.
struct Airflow {
    version: &'static str,
    venv_var: &'static str,
}

/// The Airflow versions every golden case runs against (tests/ground/assets.sh builds the venvs;
/// `tests/run.sh` exports both variables). Agents in the field run a mix of releases.
///
/// Differences found between them on this corpus: none; every test also asserts that each later
/// version reads every entry exactly as the first (`version_differences`). 3.3.2 did change the
/// code on the way: the core Connection's URI parsing skips an empty `__extra__` instead of
/// failing to decode it and checks the scheme before normalisation for its `_` warning; the Task
/// SDK Connection takes `uri=` in its constructor; `EnvironmentVariablesBackend` gained
/// team-scoped `AIRFLOW_CONN__<TEAM>___<ID>` / `AIRFLOW_VAR__<TEAM>___<KEY>` lookups and, when
/// `[core] multi_team` is on, never finds an id containing `___`. With multi-team off — the
/// default, and what this test runs — both versions read every case here identically, through
/// Secrets Manager and from our env alike.
const AIRFLOWS: [Airflow; 2] = [
    Airflow {
        version: "3.1.8",
        venv_var: "ASO_AIRFLOW_VENV",
    },
    Airflow {
        version: "3.3.2",
        venv_var: "ASO_AIRFLOW33_VENV",
    },
];

/// (id, SecretString) pairs.
type Corpus = Vec<(String, String)>;
/// What the operator injects for one entry: (env name, env value), or why not.
type Injection = Result<(String, String), Rejection>;

fn builtin_connections() -> Corpus {
    let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDGxPB4c+/=\n-----END OPENSSH PRIVATE KEY-----\n";
    let big = "x".repeat(60 * 1024);
    let mut v: Vec<(&str, String)> = vec![
        // The shared semantics document's vectors V1..V20.
        ("v1", "postgresql://user:p%40ss@db.example.com:5432/mydb".into()),
        ("v2", "postgres://u:pw@h.example.com:5432/db?sslmode=require&connect_timeout=10".into()),
        ("v3", r#"{"engine":"postgresql","username":"admin","password":"s3cr3t","host":"db.internal","port":"5432","database":"analytics"}"#.into()),
        ("v4", r#"{"username":"admin","password":"pw!","engine":"postgres","host":"x.rds.amazonaws.com","port":5432,"dbname":"app","dbInstanceIdentifier":"x"}"#.into()),
        ("v5", r#"{"conn_type":"aws","extra":{"region_name":"eu-west-1","role_arn":"arn:aws:iam::123456789012:role/r"}}"#.into()),
        ("v6", r#"{"conn_type":"http","host":"api.example.com","extra":"{\"timeout\": 30}"}"#.into()),
        ("v7", r#"{"conn_type":"mysql","user":"bob","pass":"x y","server":"h","foo":"bar"}"#.into()),
        ("v8", r#"{"conn_id":"my_db","conn_type":"postgres","host":"h"}"#.into()),
        ("v9", r#"{"user":"a","login":"b","conn_type":"postgres"}"#.into()),
        ("v10", r#"{"conn_type":"aws","login":"AKIAEXAMPLE","key":"wJalrXUtnFEMI"}"#.into()),
        ("v11", "my-conn-type://login:password@host:1234/schema?param1=val1&param2=val2".into()),
        ("v12", "http://https%3A%2F%2Fapi.example.com:443/v1".into()),
        ("v13", "mysql://us%3Aer:p%40ss%2Fw%3Ard@host:3306/my%20db".into()),
        ("v14", r#"   {"conn_type":"postgres","host":"h","port":0,"extra":""}"#.into()),
        ("v15", "aws://?__extra__=%7B%22region_name%22%3A+%22us-east-1%22%2C+%22config_kwargs%22%3A+%7B%22retries%22%3A+%7B%22max_attempts%22%3A+5%7D%7D%7D".into()),
        ("v16", r#"{"conn_type":"postgres","host":"h","password":12345}"#.into()),
        ("v17", r#"{"conn_type":"postgres","host":"h","extra":"not json"}"#.into()),
        ("v18", r#"{"conn_type":"postgres","host":"h","port":"abc"}"#.into()),
        ("v19", "sqlite://:@/%2Ftmp%2Fdb.sqlite".into()),
        ("v20", r#"{"conn_type":"snowflake","login":"u","password":"p","schema":"PUBLIC","extra":{"account":"acme","insecure_mode":false}}"#.into()),
        // Run results listed under the vectors.
        ("dup_user", r#"{"user":"a","login":"b","user":"c"}"#.into()),
        ("port_true", r#"{"conn_type":"postgres","port":true}"#.into()),
        ("port_float", r#"{"conn_type":"postgres","port":5432.9}"#.into()),
        ("extra_list", r#"{"conn_type":"postgres","extra":["a"]}"#.into()),
        ("not_json", "{not json".into()),
        ("empty_object", "{}".into()),
        ("empty", "".into()),
        ("blank", "   \n ".into()),
        // Adversarial.
        ("nbsp_json", "\u{a0}{\"conn_type\": \"postgres\", \"host\": \"h\"}".into()),
        ("fs_json", "\u{1c}{\"conn_type\": \"postgres\", \"host\": \"h\"}".into()),
        ("bom_json", "\u{feff}{\"conn_type\": \"postgres\"}".into()),
        ("json_array", r#"["postgres", "h"]"#.into()),
        ("json_trailing", r#"{"conn_type":"postgres"} x"#.into()),
        ("json_nested_dup", r#"{"conn_type":"x","extra":{"a":1,"a":2},"extra":{"b":[1,{"c":null}]}}"#.into()),
        ("unicode_values", r#"{"conn_type":"postgres","login":"jürgen","password":"päss wörd ✓ \ud83d\ude00","host":"db.例え.jp","schema":"データ"}"#.into()),
        ("unicode_uri", "postgres://j%C3%BCrgen:p%C3%A4ss@h/d%C3%A4ta".into()),
        ("pem_in_json", json!({"conn_type": "ssh", "host": "bastion", "login": "ec2-user", "extra": {"private_key": pem}}).to_string()),
        ("pem_password", json!({"conn_type": "ssh", "host": "h", "password": pem}).to_string()),
        ("big_value", json!({"conn_type": "http", "host": "h", "password": big}).to_string()),
        ("big_uri", format!("http://u:{big}@h")),
        ("extra_object_vs_string_a", r#"{"conn_type":"http","extra":{"a":"1"}}"#.into()),
        ("extra_object_vs_string_b", r#"{"conn_type":"http","extra":"{\"a\": \"1\"}"}"#.into()),
        ("extra_falsy", r#"{"conn_type":"http","extra":{}}"#.into()),
        ("extra_number", r#"{"conn_type":"http","extra":5}"#.into()),
        ("aliases_all", r#"{"user_name":"u","pass":"p","remote_host":"r","database":"d","connection_type":"mysql"}"#.into()),
        ("aliases_order", r#"{"server":"s","host":"h","schema":"sc","database":"db","key":"k","password":"p"}"#.into()),
        ("port_string_ws", r#"{"conn_type":"postgres","port":" 5432 "}"#.into()),
        ("port_underscore", r#"{"conn_type":"postgres","port":"5_432"}"#.into()),
        ("port_big", r#"{"conn_type":"postgres","port":123456789012345678901234567890}"#.into()),
        ("port_exp", r#"{"conn_type":"postgres","port":5.4e3}"#.into()),
        ("port_neg", r#"{"conn_type":"postgres","port":"-1"}"#.into()),
        ("login_number", r#"{"conn_type":"postgres","login":7}"#.into()),
        ("login_zero", r#"{"conn_type":"postgres","login":0}"#.into()),
        ("conn_type_bool", r#"{"conn_type":true}"#.into()),
        ("conn_type_postgresql_dash", r#"{"conn_type":"google-cloud-platform"}"#.into()),
        ("three_schemes", "http://https://a://b".into()),
        ("two_schemes", "http://https://api.example.com/v1".into()),
        ("no_scheme", "just-a-host".into()),
        ("uri_ws", "  \n postgres://u:p@h:5432/d \t".into()),
        ("uri_extra_param", "aws://?region_name=eu-west-1&__extra__=%7B%7D".into()),
        ("json_ws_inside", "{\n  \"conn_type\" : \"postgres\" ,\n  \"host\":\"h\"\n}\n".into()),
        ("json_escapes", r#"{"conn_type":"postgres","password":"a\"b\\c\/d\n\t\u0000e"}"#.into()),
        // Ids Airflow accepts that are awkward for env names / Secret keys.
        ("my-db", "postgres://h".into()),
        ("my.db.v2", "postgres://h".into()),
        ("team/db", "postgres://h".into()),
        ("MixedCase_Id", "postgres://h".into()),
        // Airflow 3.3's team-scoped shape `_<team>___<id>`: with multi-team off (the default)
        // a plain id in both versions.
        ("_team___db", "postgres://h".into()),
    ];
    v.push(("straße", "postgres://h".into()));
    v.push(("café", "postgres://h".into()));
    v.into_iter().map(|(id, s)| (id.to_string(), s)).collect()
}

fn builtin_variables() -> Corpus {
    [
        ("plain", "value".to_string()),
        ("json", "  {\"a\": 1}\n".into()),
        ("multiline", "line1\nline2\r\nline3".into()),
        ("unicode", "ünïcödé ✓ 例え".into()),
        ("big", "y".repeat(60 * 1024)),
        ("with-dash.and.dots", "v".into()),
        ("path/like", "v".into()),
        ("Case_Mixed", "v".into()),
        ("spaces_only", "   ".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn external_corpus() -> (Corpus, Corpus) {
    let Ok(path) = std::env::var("ASO_GOLDEN_CORPUS") else {
        return (vec![], vec![]);
    };
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("ASO_GOLDEN_CORPUS={path}: {e}"));
    let doc: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ASO_GOLDEN_CORPUS={path}: {e}"));
    let read = |kind: &str| -> Corpus {
        doc.get(kind)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["id"].as_str().expect("id").to_string(),
                            e["secret"].as_str().expect("secret").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    (read("connections"), read("variables"))
}

/// What the operator would inject for one entry: Some((env name, value)) or the rejection.
fn ours_conn(id: &str, secret: &str) -> Injection {
    let name = connection_env_name(id);
    check_env_name(&name).map_err(|e| Rejection::Unrepresentable(e.to_string()))?;
    let c = connection_value(secret, &BTreeMap::new())?;
    Ok((name, c.value))
}

fn ours_var(id: &str, secret: &str) -> Injection {
    let name = variable_env_name(id);
    check_env_name(&name).map_err(|e| Rejection::Unrepresentable(e.to_string()))?;
    Ok((name, plain_value(secret)?))
}

fn job_entries(
    entries: &[(String, String)],
    ours: impl Fn(&str, &str) -> Injection,
) -> (Vec<Value>, Vec<Injection>) {
    let mut job = Vec::new();
    let mut results = Vec::new();
    for (id, secret) in entries {
        let r = ours(id, secret);
        let (env_name, env_value) = match &r {
            Ok((n, v)) => (json!(n), json!(v)),
            Err(_) => (Value::Null, Value::Null),
        };
        job.push(json!({"id": id, "secret": secret, "env_name": env_name, "env_value": env_value}));
        results.push(r);
    }
    (job, results)
}

/// Runs the oracle with the given Airflow; checks that the venv holds the version it claims.
fn run_oracle(airflow: &Airflow, job: &Value) -> Value {
    let venv = ground_var(airflow.venv_var);
    let script = repo_root().join("tests/golden/airflow_oracle.py");
    let python = format!("{venv}/bin/python");
    let out = pipe(
        &python,
        &[script.to_str().unwrap()],
        job.to_string().as_bytes(),
        &format!("the Airflow {} oracle", airflow.version),
    );
    let stdout = String::from_utf8(out).expect("oracle output is UTF-8");
    let (_, result) = stdout
        .split_once("=== aso-oracle-result ===\n")
        .unwrap_or_else(|| {
            panic!(
                "Airflow {}: oracle printed no result marker",
                airflow.version
            )
        });
    let result: Value = serde_json::from_str(result.trim()).unwrap_or_else(|e| {
        panic!(
            "Airflow {}: oracle result is not JSON: {e}",
            airflow.version
        )
    });
    assert_eq!(
        result["airflow"].as_str(),
        Some(airflow.version),
        "{}={venv} does not hold Airflow {}",
        airflow.venv_var,
        airflow.version
    );
    result
}

/// Every entry that an Airflow after the first reads differently from the first (3.1.8), through
/// Secrets Manager or from our env: found or not, every field, the error that hid it. There is none
/// today (see [`AIRFLOWS`]); should a new pin read a case differently, assert what each version
/// reads for that case here instead of dropping it from the comparison.
fn version_differences(conns: &Corpus, vars: &Corpus, results: &[Value]) -> Vec<String> {
    let mut failures = Vec::new();
    let (base, base_result) = (&AIRFLOWS[0], &results[0]);
    for (airflow, result) in AIRFLOWS.iter().zip(results).skip(1) {
        for (kind, corpus) in [("connections", conns), ("variables", vars)] {
            for (i, (id, _)) in corpus.iter().enumerate() {
                let (a, b) = (&base_result[kind][i], &result[kind][i]);
                if a != b {
                    failures.push(format!(
                        "{kind} {id:?}: Airflow {} reads {b} but Airflow {} reads {a}",
                        airflow.version, base.version
                    ));
                }
            }
        }
    }
    failures
}

/// Panics listing every failure, of every Airflow version, at once.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with Airflow:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Compares what Airflow reads through Secrets Manager with what it reads from our env, entry by
/// entry; appends every disagreement, prefixed with the Airflow version, to `all_failures`.
/// Returns (injected, absent, unrepresentable) counts of connections.
fn agreement(
    airflow: &Airflow,
    conns: &Corpus,
    vars: &Corpus,
    conn_ours: &[Injection],
    var_ours: &[Injection],
    result: &Value,
    all_failures: &mut Vec<String>,
) -> (usize, usize, usize) {
    let mut failures = Vec::new();
    let (mut injected, mut absent, mut unrepresentable) = (0, 0, 0);
    for (i, (id, _)) in conns.iter().enumerate() {
        let r = &result["connections"][i];
        assert_eq!(r["id"].as_str(), Some(id.as_str()));
        match &conn_ours[i] {
            Ok(_) => {
                injected += 1;
                for class in ["core", "sdk"] {
                    if r["sm"][class] != r["env"][class] {
                        failures.push(format!("connection {id:?} ({class}): Secrets Manager gives {} but our env gives {}", r["sm"][class], r["env"][class]));
                    }
                }
            }
            Err(Rejection::Absent(why)) => {
                absent += 1;
                for class in ["core", "sdk"] {
                    if r["sm"][class]["found"] != json!(false) {
                        failures.push(format!("connection {id:?}: we drop it ({why}) but Airflow ({class}) finds it through Secrets Manager"));
                    }
                }
            }
            Err(Rejection::Unrepresentable(_)) => unrepresentable += 1,
            Err(Rejection::Invalid(why)) => {
                failures.push(format!("connection {id:?}: unexpected Invalid: {why}"))
            }
        }
    }
    for (i, (id, _)) in vars.iter().enumerate() {
        let r = &result["variables"][i];
        match &var_ours[i] {
            Ok(_) => {
                if r["sm"] != r["env"] {
                    failures.push(format!(
                        "variable {id:?}: Secrets Manager gives {} but our env gives {}",
                        r["sm"], r["env"]
                    ));
                }
                if r["sm"]["found"] != json!(true) {
                    failures.push(format!(
                        "variable {id:?}: Airflow did not find it through Secrets Manager"
                    ));
                }
            }
            Err(Rejection::Absent(why)) if r["sm"]["found"] == json!(false) => {
                let _ = why;
            }
            Err(Rejection::Unrepresentable(_)) => {}
            Err(e) => failures.push(format!("variable {id:?}: not injected: {e}")),
        }
    }
    all_failures.extend(
        failures
            .into_iter()
            .map(|f| format!("Airflow {}: {f}", airflow.version)),
    );
    (injected, absent, unrepresentable)
}

#[test]
fn airflow_reads_our_env_exactly_as_it_reads_secrets_manager() {
    let endpoint = ground_var("ASO_MOTO_ENDPOINT");
    let (ext_conns, ext_vars) = external_corpus();
    let conns: Vec<_> = builtin_connections().into_iter().chain(ext_conns).collect();
    let vars: Vec<_> = builtin_variables().into_iter().chain(ext_vars).collect();

    let (conn_job, conn_ours) = job_entries(&conns, ours_conn);
    let (var_job, var_ours) = job_entries(&vars, ours_var);
    let prefix = format!("golden-{}/connections", std::process::id());
    let vprefix = format!("golden-{}/variables", std::process::id());
    let job = json!({
        "endpoint": endpoint,
        "connections_prefix": prefix,
        "variables_prefix": vprefix,
        "connections": conn_job,
        "variables": var_job,
    });

    // Each run stores the corpus (again: the same values) and reads it back.
    let mut failures = Vec::new();
    let mut counts = (0, 0, 0);
    let mut results = Vec::new();
    for airflow in &AIRFLOWS {
        let result = run_oracle(airflow, &job);
        counts = agreement(
            airflow,
            &conns,
            &vars,
            &conn_ours,
            &var_ours,
            &result,
            &mut failures,
        );
        results.push(result);
    }
    failures.extend(version_differences(&conns, &vars, &results));
    assert_no_failures(&failures);
    // The built-in corpus exercises all three outcomes (counted on our side: the same for every
    // Airflow version).
    let (injected, absent, unrepresentable) = counts;
    assert!(
        injected >= 50 && absent >= 10 && unrepresentable >= 1,
        "injected {injected}, absent {absent}, unrepresentable {unrepresentable}"
    );
}

/// What a team binding delivers for one entry, through the operator's own planning (team
/// refusals included): the env var, or why not.
fn ours_team(kind: EntryKind, team: &str, id: &str, secret: &str) -> Injection {
    let entry = ResolvedEntry {
        kind,
        name: id.to_string(),
        config: None,
        secret_id: format!("s/{id}"),
        version_id: Some("v".into()),
        outcome: Fetched::Value(secret.to_string()),
        team: Some(team.to_string()),
    };
    let d = desired_secret(&[entry], InjectionMode::Env, &BTreeMap::new());
    let e = &d.entries[0];
    let why = e.message.clone().unwrap_or_default();
    match e.state {
        EntryState::Synced => {
            let name = e.env_name.clone().expect("env name");
            Ok((name.clone(), d.data[&secret_key_for(&name)].clone()))
        }
        EntryState::Unrepresentable => Err(Rejection::Unrepresentable(why)),
        _ => Err(Rejection::Absent(why)),
    }
}

/// Airflow 3.3.2 with `[core] multi_team = True`: a task of team `data-eng` reads the team-scoped
/// env a team binding delivers exactly as it reads `<prefix>/data-eng--<id>` through Secrets
/// Manager; ids Airflow refuses in that mode (`--`) are not delivered, ids its env backend
/// refuses (`___`) are reported unrepresentable.
#[test]
fn airflow_3_3_multi_team_reads_team_scoped_env_as_it_reads_secrets_manager() {
    let endpoint = ground_var("ASO_MOTO_ENDPOINT");
    let team = "data-eng";
    let edge = |v: &str| {
        ["a--b", "x___y", "_t___id", "team--", "plain_team_id"]
            .map(|id| (id.to_string(), v.to_string()))
    };
    let conns: Corpus = builtin_connections()
        .into_iter()
        .chain(edge("postgres://u:p@h:5432/db"))
        .collect();
    let vars: Corpus = builtin_variables().into_iter().chain(edge("v")).collect();
    let (conn_job, conn_ours) = job_entries(&conns, |id, secret| {
        ours_team(EntryKind::Connection, team, id, secret)
    });
    let (var_job, var_ours) = job_entries(&vars, |id, secret| {
        ours_team(EntryKind::Variable, team, id, secret)
    });
    let job = json!({
        "endpoint": endpoint,
        "connections_prefix": format!("golden-team-{}/connections", std::process::id()),
        "variables_prefix": format!("golden-team-{}/variables", std::process::id()),
        "connections": conn_job,
        "variables": var_job,
        "team": team,
    });
    let airflow = &AIRFLOWS[1];
    let result = run_oracle(airflow, &job);
    let mut failures = Vec::new();
    let (injected, absent, unrepresentable) = agreement(
        airflow,
        &conns,
        &vars,
        &conn_ours,
        &var_ours,
        &result,
        &mut failures,
    );
    assert_no_failures(&failures);
    let at = |corpus: &Corpus, id: &str| corpus.iter().position(|(i, _)| i == id).unwrap();
    // The refusals are Airflow's: it finds neither through Secrets Manager (`--`) …
    assert_eq!(
        result["variables"][at(&vars, "a--b")]["sm"]["found"],
        json!(false)
    );
    // … and finds `x___y` there but never from env (so we do not claim to deliver it).
    assert_eq!(
        result["variables"][at(&vars, "x___y")]["sm"]["found"],
        json!(true)
    );
    assert!(matches!(
        var_ours[at(&vars, "x___y")],
        Err(Rejection::Unrepresentable(_))
    ));
    assert_eq!(
        conn_ours[at(&conns, "plain_team_id")].as_ref().unwrap().0,
        "AIRFLOW_CONN__DATA-ENG___PLAIN_TEAM_ID"
    );
    assert!(
        injected >= 50 && absent >= 10 && unrepresentable >= 1,
        "injected {injected}, absent {absent}, unrepresentable {unrepresentable}"
    );
}

#[test]
fn extra_conn_words_mean_what_they_mean_to_airflow() {
    let endpoint = ground_var("ASO_MOTO_ENDPOINT");
    let words: BTreeMap<String, Vec<String>> = [
        ("user".to_string(), vec!["account".to_string()]),
        (
            "host".to_string(),
            vec!["endpoint".to_string(), "address".to_string()],
        ),
        ("extra".to_string(), vec!["options".to_string()]),
    ]
    .into();
    let conns: Vec<(String, String)> = [
        ("snow", r#"{"conn_type":"snowflake","account":"acme","password":"p","endpoint":"e.example.com"}"#),
        ("order", r#"{"address":"a","host":"h","endpoint":"e","login":"l","account":"acc"}"#),
        ("opts", r#"{"conn_type":"http","options":{"timeout":3},"extra":{"ignored":true}}"#),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut job = Vec::new();
    for (id, secret) in &conns {
        let c = connection_value(secret, &words).expect("injected");
        job.push(json!({"id": id, "secret": secret, "env_name": connection_env_name(id), "env_value": c.value}));
    }
    let job = json!({
        "endpoint": endpoint,
        "connections_prefix": format!("golden-words-{}", std::process::id()),
        "extra_conn_words": words,
        "connections": job,
    });
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for airflow in &AIRFLOWS {
        let result = run_oracle(airflow, &job);
        let v = airflow.version;
        for (i, (id, _)) in conns.iter().enumerate() {
            let r = &result["connections"][i];
            if r["sm"]["core"]["found"] != json!(true) {
                failures.push(format!(
                    "Airflow {v}: connection {id:?} not found through Secrets Manager: {}",
                    r["sm"]
                ));
            }
            if r["sm"] != r["env"] {
                failures.push(format!(
                    "Airflow {v}: connection {id:?}: Secrets Manager gives {} but our env gives {}",
                    r["sm"], r["env"]
                ));
            }
        }
        results.push(result);
    }
    failures.extend(version_differences(&conns, &Vec::new(), &results));
    assert_no_failures(&failures);
}

/// The same agreement for what the controller itself wrote: the corpus is stored in the emulator,
/// a binding discovers it, and Airflow reads the controller's managed Secret as env.
#[tokio::test]
async fn airflow_reads_the_controllers_secret_as_it_reads_secrets_manager() {
    use airflow_secrets_operator::airflow::names;
    use airflow_secrets_operator::api::{AirflowSecretBinding, EntryKind, EntryState};
    use airflow_secrets_operator::plan::content::secret_key_for;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;

    let endpoint = ground_var("ASO_MOTO_ENDPOINT");
    // Secrets Manager cannot hold an empty string: such entries cannot exist there.
    let conns: Corpus = builtin_connections()
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let vars: Corpus = builtin_variables();
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "golden-controller").await;
    let prefix = format!("golden-ctl-{ns}");
    let sm = secrets_manager().await;
    for (id, secret) in &conns {
        put_secret(&sm, &format!("{prefix}/connections/{id}"), secret).await;
    }
    for (id, secret) in &vars {
        put_secret(&sm, &format!("{prefix}/variables/{id}"), secret).await;
    }
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "golden"},
            "spec": {
                "discovery": {"connectionsPrefix": format!("{prefix}/connections"), "variablesPrefix": format!("{prefix}/variables")},
                "target": {"injection": "SecretOnly"}
            }
        }),
    )
    .await;
    let bindings: Api<AirflowSecretBinding> = Api::namespaced(client.clone(), &ns);
    let total = conns.len() + vars.len();
    let status = eventually(
        "every entry in status",
        std::time::Duration::from_secs(60),
        || async {
            let s = bindings.get("golden").await.ok()?.status?;
            (s.total_entries == Some(total as i64)).then_some(s)
        },
    )
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("golden-airflow")
        .await
        .expect("managed Secret");
    let data = secret.data.unwrap_or_default();

    // Status lists the entries that need attention (a binding this size does not list every
    // Synced one): an entry whose key is in the Secret is Synced.
    let injection = |kind: EntryKind, id: &str| -> Injection {
        let env = match kind {
            EntryKind::Connection => names::connection_env_name(id),
            _ => names::variable_env_name(id),
        };
        if let Some(value) = data.get(&secret_key_for(&env)) {
            return Ok((env, String::from_utf8(value.0.clone()).expect("utf-8")));
        }
        let e = status
            .entries
            .iter()
            .find(|e| e.kind == kind && e.name == id)
            .unwrap_or_else(|| {
                panic!("{kind:?} {id:?} is neither in the Secret nor listed in status")
            });
        let why = e.message.clone().unwrap_or_default();
        match e.state {
            EntryState::Synced => {
                let env = e.env_name.clone().expect("env name");
                let value = data
                    .get(&secret_key_for(&env))
                    .unwrap_or_else(|| panic!("{env} not in the Secret"));
                Ok((env, String::from_utf8(value.0.clone()).expect("utf-8")))
            }
            EntryState::Invalid => Err(Rejection::Absent(why)),
            EntryState::Unrepresentable => Err(Rejection::Unrepresentable(why)),
            other => panic!("{kind:?} {id:?}: unexpected state {other:?}: {why}"),
        }
    };
    let conn_ours: Vec<Injection> = conns
        .iter()
        .map(|(id, _)| injection(EntryKind::Connection, id))
        .collect();
    let var_ours: Vec<Injection> = vars
        .iter()
        .map(|(id, _)| injection(EntryKind::Variable, id))
        .collect();
    let job = |corpus: &Corpus, ours: &[Injection]| -> Vec<Value> {
        corpus
            .iter()
            .zip(ours)
            .map(|((id, _), r)| match r {
                Ok((n, v)) => json!({"id": id, "env_name": n, "env_value": v}),
                Err(_) => json!({"id": id, "env_name": null, "env_value": null}),
            })
            .collect()
    };
    let job = json!({
        "endpoint": endpoint,
        "store": false,
        "connections_prefix": format!("{prefix}/connections"),
        "variables_prefix": format!("{prefix}/variables"),
        "connections": job(&conns, &conn_ours),
        "variables": job(&vars, &var_ours),
    });
    let mut failures = Vec::new();
    let mut counts = (0, 0, 0);
    let mut results = Vec::new();
    for airflow in &AIRFLOWS {
        let result = run_oracle(airflow, &job);
        counts = agreement(
            airflow,
            &conns,
            &vars,
            &conn_ours,
            &var_ours,
            &result,
            &mut failures,
        );
        results.push(result);
    }
    failures.extend(version_differences(&conns, &vars, &results));
    assert_no_failures(&failures);
    let (injected, absent, _) = counts;
    assert!(
        injected >= 50 && absent >= 8,
        "injected {injected}, absent {absent}"
    );
    delete_namespace(&client, &ns).await;
}
