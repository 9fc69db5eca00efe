//! The lookup-pattern front end (Python `re` syntax → the engine) on arbitrary pattern text, and
//! each accepted pattern on arbitrary ids. Input: `pattern \0 id \0 id …`. Never panics; an
//! accepted pattern decides every ASCII id or reports the backtracking limit, and refuses others.
#![no_main]

use airflow_secrets_operator::airflow::pattern::LookupPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let pattern = parts.next().unwrap_or_default();
    match LookupPattern::new(pattern) {
        Ok(p) => {
            for id in parts.take(8) {
                let decided = p.matches(id);
                if !id.is_ascii() {
                    assert!(decided.is_err());
                }
            }
        }
        Err(e) => {
            let length = pattern.chars().count();
            assert!(e.position().is_none_or(|at| at <= length));
        }
    }
});
