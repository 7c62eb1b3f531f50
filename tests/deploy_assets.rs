//! The deployment assets, validated offline by `scripts/validate-deploy.sh` (compose-spec schema,
//! official Kubernetes schemas, kustomize, promtool, the GitHub workflow schema, and the binary's
//! own `--help` and `check-config`); and the validator itself rejects broken copies.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn validate(root: &Path) -> (bool, String) {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/validate-deploy.sh"))
        .args(["--root", root.to_str().unwrap()])
        .env("CREDIT_WORKER_BIN", worker_binary())
        .output()
        .expect("running scripts/validate-deploy.sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Every check on the committed docker-compose.yml, Dockerfile, deploy/ overlays and CI
/// workflow passes.
#[test]
fn deployment_assets_pass_every_offline_check() {
    let (passed, report) = validate(&repo_root());
    println!("{report}");
    assert!(passed, "{report}");
    assert!(report.contains("ok   compose file matches the compose-spec schema"), "{report}");
    assert!(report.contains("ok   k8s schema prod: Deployment/credit-worker"), "{report}");
}

/// A compose key that does not exist, a misspelt flag in a compose command, a misspelt
/// Kubernetes field, an unknown configuration key and a literal password are each reported.
#[test]
fn validator_rejects_broken_assets() {
    let root = tempfile::tempdir().unwrap();
    for directory in ["deploy", "monitoring", "config", ".github"] {
        copy_tree(&repo_root().join(directory), &root.path().join(directory));
    }
    for file in ["docker-compose.yml", "Dockerfile"] {
        std::fs::copy(repo_root().join(file), root.path().join(file)).unwrap();
    }
    let compose = root.path().join("docker-compose.yml");
    edit(
        &compose,
        "  postgres:\n    image: postgres:16-bookworm\n",
        "  postgres:\n    image: postgres:16-bookworm\n    restart_policy: always\n",
    );
    edit(&compose, "      - --partitions\n", "      - --partitons\n");
    edit(&compose, "    CREDIT_WORKER__LOGGING__FORMAT: json\n", "    CREDIT_WORKER__LOGGING__FORMATT: json\n");
    edit(
        &compose,
        "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}",
        "GF_SECURITY_ADMIN_PASSWORD: admin",
    );
    edit(
        &root.path().join("deploy/base/deployment.yaml"),
        "terminationGracePeriodSeconds: 45",
        "terminationGracePeriod: 45",
    );
    let (passed, report) = validate(root.path());
    println!("{report}");
    assert!(!passed);
    for expected in [
        "FAIL compose file matches the compose-spec schema",
        "FAIL compose topics: `credit-worker create-topics --bootstrap-servers kafka:9092 --partitons",
        "FAIL compose worker-1: environment is a valid worker configuration",
        "FAIL compose grafana: GF_SECURITY_ADMIN_PASSWORD has no literal value",
        "FAIL k8s schema dev: Deployment/credit-worker",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in\n{report}");
    }
}

/// The validator installs nothing: in a checkout without `.tools/` it fails at once, names
/// `scripts/bootstrap.sh`, and creates no tool directory (two tests running it on a fresh
/// machine once raced to create the same venv).
#[test]
fn validator_installs_nothing() {
    let checkout = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(checkout.path().join("scripts")).unwrap();
    for script in ["validate-deploy.sh", "validate_deploy.py"] {
        std::fs::copy(repo_root().join("scripts").join(script), checkout.path().join("scripts").join(script)).unwrap();
    }
    let output = Command::new("bash")
        .arg(checkout.path().join("scripts/validate-deploy.sh"))
        .env("CREDIT_WORKER_BIN", worker_binary())
        .output()
        .expect("running scripts/validate-deploy.sh");
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("scripts/bootstrap.sh"), "{text}");
    assert!(!checkout.path().join(".tools").exists(), "the validator created .tools/ itself");
}
