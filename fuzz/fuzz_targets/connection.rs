//! A connection secret (URI or JSON) → the `AIRFLOW_CONN_*` value, with `extraConnWords` chosen
//! by the first byte. Never panics; URIs are copied byte for byte; JSON becomes the seven fields.
#![no_main]

use std::collections::BTreeMap;

use airflow_secrets_operator::airflow::connection::{
    FIELDS, Format, connection_value, plain_value,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(secret) = std::str::from_utf8(rest) else {
        return;
    };
    let mut words: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match selector % 4 {
        0 => {}
        1 => {
            words.insert("user".into(), vec!["account".into(), "login".into()]);
            words.insert("host".into(), vec!["endpoint".into()]);
        }
        2 => {
            words.insert("extra".into(), vec!["".into(), "password".into()]);
        }
        _ => {
            words.insert("description".into(), vec!["d".into()]);
        }
    }
    if let Ok(c) = connection_value(secret, &words) {
        match c.format {
            Format::Uri => assert_eq!(c.value, secret),
            Format::Json => {
                let v: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&c.value).expect("the standardised JSON parses");
                assert!(v.keys().map(String::as_str).eq(FIELDS));
            }
        }
    }
    assert_eq!(
        plain_value(secret).ok().as_deref(),
        (!secret.contains('\0')).then_some(secret)
    );
});
