//! `crds/mqttclusters.hmq.io.yaml` is the output of `hmq-operator crd`; this test fails when
//! they differ. Regenerate with `cargo run -p hmq-operator -- crd > crds/mqttclusters.hmq.io.yaml`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn crds_directory_matches_the_generated_crd() {
    let generated = hmq_operator::render::crd_yaml().unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/mqttclusters.hmq.io.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/mqttclusters.hmq.io.yaml is out of date: run \
         `cargo run -p hmq-operator -- crd > crds/mqttclusters.hmq.io.yaml`"
    );
}

#[test]
fn crd_has_the_subresources_and_columns() {
    let yaml = hmq_operator::render::crd_yaml().unwrap();
    for needle in [
        "shortNames:\n    - mqc",
        "specReplicasPath: .spec.replicas",
        "statusReplicasPath: .status.replicas",
        "labelSelectorPath: .status.selector",
        "status: {}",
        "name: Ready",
        "name: Phase",
        "name: Age",
        "x-kubernetes-validations",
    ] {
        assert!(yaml.contains(needle), "{needle} missing");
    }
}
