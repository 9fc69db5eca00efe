# Developer shortcuts. The README's commands are the source of truth.
.PHONY: test test-long demo crds unit lint

test:            ## every test, against a real local control plane (tests/run.sh)
	tests/run.sh

test-long:       ## the reliability suites with their longer scenarios (docs/reliability.md)
	tests/run.sh --test faults --test control_plane_faults -- --include-ignored --nocapture

demo:            ## local control plane + emulator + agents + example secrets
	examples/demo/run.sh

crds:            ## regenerate crds/, the chart's copy and docs/reference.md from the Rust types
	cargo run -q -- crd --out-dir crds
	cp crds/*.yaml charts/airflow-secrets-operator/crds/
	cargo run -q -- crd --reference > docs/reference.md

unit:            ## pure tests only, no test ground
	cargo test --lib

lint:
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
