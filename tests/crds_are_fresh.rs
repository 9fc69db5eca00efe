//! `crds/` must hold exactly what the code generates (`airflow-secrets-operator crd`).
//! Regenerate both with `make crds`.

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let generated = airflow_secrets_operator::crd::all_yaml().expect("render CRDs");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/airflowsecretbindings.yaml");
    let on_disk = std::fs::read_to_string(&path).expect("read crds/airflowsecretbindings.yaml");
    assert!(
        on_disk == generated,
        "{} is stale: run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn binding_reference_matches_the_crd() {
    let generated = airflow_secrets_operator::crd::reference_markdown();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let on_disk = std::fs::read_to_string(&path).expect("read docs/reference.md");
    assert!(
        on_disk == generated,
        "{} is stale: run `make crds` and commit the result",
        path.display()
    );
}
