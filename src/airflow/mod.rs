//! Airflow's semantics, as pure functions: how a Secrets Manager secret becomes the value of an
//! `AIRFLOW_CONN_*` / `AIRFLOW_VAR_*` / `AIRFLOW__SECTION__KEY` environment variable that Airflow's
//! `EnvironmentVariablesBackend` reads exactly as its `SecretsManagerBackend` would have read the
//! secret itself.
//!
//! - [`connection`]: URI secrets verbatim; JSON secrets standardised like the backend does.
//! - [`names`]: environment variable names (Python's `str.upper`) and what Kubernetes can carry.
//! - [`path`]: secret names from prefixes and separators, and back (discovery).
//! - [`pattern`]: lookup patterns with Python's `re.match(.., re.IGNORECASE)` semantics.

pub mod connection;
pub mod names;
pub mod path;
pub mod pattern;
#[cfg(test)]
mod props;

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII information separators
/// U+001C..U+001F, which Python counts as whitespace and Rust's `char::is_whitespace` does not.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_is_pythons() {
        assert_eq!(py_strip(" \t\n x \r\u{a0}"), "x");
        // Python strips the information separators; Rust's trim() would not.
        assert_eq!(py_strip("\u{1c}\u{1f}{}"), "{}");
        // U+FEFF (BOM) is not whitespace for Python.
        assert_eq!(py_strip("\u{feff}{}"), "\u{feff}{}");
        assert_eq!(py_strip("\u{2028}a\u{3000}"), "a");
    }
}
