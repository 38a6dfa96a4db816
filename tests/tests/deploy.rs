//! The deployment files in deploy/: the systemd unit passes `systemd-analyze verify` without a
//! warning, the Ansible role passes `--syntax-check` and renders a config that xvrrp accepts
//! (ansible's own `validate:` runs `xvrrp check-config`), the Kubernetes DaemonSet parses and
//! its per-node configs are valid.

use std::{path::PathBuf, process::Command, time::Duration};

use xvrrp_lab::{assert_valid_config, run_with_timeout, scratch_dir, workspace_root, xvrrp_bin};

fn deploy(path: &str) -> PathBuf {
    workspace_root().join("deploy").join(path)
}

/// Whether `program` is installed; when not, says the test is skipped (setup installs it).
fn have(program: &str, test: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("XVRRP_REQUIRE_PRIVILEGED").is_none(),
            "{test}: {program} is not installed (cargo xtask setup installs it)"
        );
        eprintln!("{test}: skipped: {program} is not installed");
    }
    found
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let test = "the_systemd_unit_verifies_without_a_warning";
    if !have("systemd-analyze", test) {
        return;
    }
    let dir = scratch_dir("deploy-unit");
    // An instance of the template, with the binary that exists here.
    let unit = std::fs::read_to_string(deploy("systemd/xvrrp@.service"))
        .unwrap()
        .replace("/usr/local/bin/xvrrp", xvrrp_bin().to_str().unwrap());
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let path = dir.join("xvrrp@eth0.service");
    std::fs::write(&path, unit).unwrap();
    let out = run_with_timeout(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        Duration::from_secs(60),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ansible_role_passes_syntax_check_and_renders_a_valid_config() {
    let test = "the_ansible_role_passes_syntax_check_and_renders_a_valid_config";
    if !have("ansible-playbook", test) {
        return;
    }
    let ansible = deploy("ansible");
    let out = run_with_timeout(
        Command::new("ansible-playbook")
            .current_dir(&ansible)
            .args([
                "--syntax-check",
                "-i",
                "inventory.example.ini",
                "mysql-pair.yml",
            ]),
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Render for this host only (no service), into a scratch directory.
    let dir = scratch_dir("deploy-ansible");
    let option_file = dir.join("probe.cnf");
    std::fs::write(&option_file, "[client]\npassword = probe-secret\n").unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "[mysql_pair]\nlocalhost ansible_connection=local xvrrp_priority=200\n\n[mysql_pair:vars]\nmysql_vip=192.0.2.100/24\n",
    )
    .unwrap();
    let vars = serde_json::json!({
        "xvrrp_manage_service": false,
        "xvrrp_config_dir": dir.join("etc"),
        "xvrrp_validate_binary": xvrrp_bin(),
        "xvrrp_interface": "lo",
        "xvrrp_mysql": [{
            "name": "local", "host": "127.0.0.1", "user": "xvrrp",
            "option_file": option_file, "interval_ms": 100, "replication": true,
            "replication_weight": -150
        }],
    });
    std::fs::write(dir.join("vars.json"), vars.to_string()).unwrap();
    let out = run_with_timeout(
        Command::new("ansible-playbook")
            .current_dir(&ansible)
            .env("ANSIBLE_NOCOLOR", "1")
            .args(["-i"])
            .arg(dir.join("inventory.ini"))
            .arg("-e")
            .arg(format!("@{}", dir.join("vars.json").display()))
            .args(["--tags", "config", "mysql-pair.yml"]),
        Duration::from_secs(300),
    )
    .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let rendered = dir.join("etc/lo.toml");
    let text = std::fs::read_to_string(&rendered).unwrap_or_else(|e| panic!("{e}: {log}"));
    for want in [
        "interface = \"lo\"",
        "priority = 200\n",
        "vips = [\"192.0.2.100/24\"]",
        "track_mysql = [\"local\"]",
        "[metrics]\nlisten = \"127.0.0.1:9650\"",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert_valid_config(&rendered);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&rendered).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_daemonset_parses_and_its_node_configs_are_valid() {
    let test = "the_daemonset_parses_and_its_node_configs_are_valid";
    if !have("python3", test) {
        return;
    }
    let out = run_with_timeout(
        Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(deploy("kubernetes/daemonset.yaml")),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let pod = &kind("DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let container = &pod["containers"][0];
    let caps = &container["securityContext"]["capabilities"]["add"];
    for cap in ["NET_ADMIN", "NET_RAW", "BPF", "PERFMON"] {
        assert!(
            caps.as_array().unwrap().iter().any(|c| c == cap),
            "{cap} missing"
        );
    }
    let bpffs = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "bpffs")
        .expect("a bpffs volume");
    assert_eq!(bpffs["hostPath"]["path"], "/sys/fs/bpf");

    let dir = scratch_dir("deploy-daemonset");
    let data = kind("ConfigMap")["data"].as_object().unwrap();
    assert!(!data.is_empty());
    for (name, text) in data {
        let path = dir.join(name);
        std::fs::write(&path, text.as_str().unwrap()).unwrap();
        assert_valid_config(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
