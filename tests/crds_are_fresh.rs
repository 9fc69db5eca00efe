//! `crds/` must hold exactly what the code generates (`airflow-secrets-operator crd`).
//! Regenerate both with `make crds`.

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = airflow_secrets_operator::crd::files().expect("render CRDs");
    let mut on_disk: Vec<String> = std::fs::read_dir(root.join("crds"))
        .expect("read crds/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, names,
        "crds/ holds other files than the code generates"
    );
    for (name, generated) in files {
        let path = root.join("crds").join(name);
        let text = std::fs::read_to_string(&path).expect("read a CRD file");
        assert!(
            text == generated,
            "{} is stale: run `make crds` and commit the result",
            path.display()
        );
    }
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
