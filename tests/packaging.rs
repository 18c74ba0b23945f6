//! Packaging stays consistent with the binary: the compose file, its node configs, the
//! Dockerfile and the systemd unit are checked without any container engine or systemd.
//!
//! - cluster/docker-compose.yml: exactly three node services with distinct ids, hosts
//!   and published ports; each service's command parses as `meridian node` arguments;
//!   the config it mounts parses into [`NodeConfig`] and validates after the service's
//!   `MERIDIAN_*` environment is applied; the peers agree, each node's own peer entry
//!   matches its host name and listen ports, exactly node 1 bootstraps, and its data dir
//!   lies in its volume.
//! - cluster/Dockerfile: multi-stage, a slim Debian runtime, a non-root user.
//! - cluster/systemd/meridian@.service: runs `meridian node --config
//!   /etc/meridian/%i.toml` as a non-root user, does not restart on exit code 2, and its
//!   example config validates with the data dir the unit's StateDirectory creates.
//!   Where `systemd-analyze` exists, `systemd-analyze verify` must accept the unit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use meridian::cli::{Cli, Command};
use meridian::config::NodeConfig;
use serde_yaml::Value;

/// Where the node image reads its config.
const CONFIG_IN_CONTAINER: &str = "/etc/meridian/node.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn compose() -> Value {
    let text = read(&repo().join("cluster/docker-compose.yml"));
    serde_yaml::from_str(&text).expect("cluster/docker-compose.yml is valid YAML")
}

fn str_of(v: &Value, what: &str) -> String {
    v.as_str().unwrap_or_else(|| panic!("{what} must be a string, got {v:?}")).to_string()
}

/// A service's `command` as argv (list form, or a string split on whitespace).
fn command_of(name: &str, svc: &Value) -> Vec<String> {
    match &svc["command"] {
        Value::Sequence(items) => items.iter().map(|v| str_of(v, "command item")).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        other => panic!("service {name}: command must be a list or string, got {other:?}"),
    }
}

/// A service's `environment` (map or `KEY=VALUE` list form).
fn environment_of(svc: &Value) -> BTreeMap<String, String> {
    match &svc["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).expect("scalar").trim().to_string(),
                };
                (str_of(k, "environment key"), v)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|v| {
                let s = str_of(v, "environment item");
                let (k, v) = s.split_once('=').unwrap_or((&s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Short-syntax volume mounts `SOURCE:TARGET[:MODE]` as (source, target).
fn volumes_of(svc: &Value) -> Vec<(String, String)> {
    svc["volumes"]
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|v| {
                    let s = str_of(v, "volume");
                    let mut parts = s.split(':');
                    let source = parts.next().unwrap_or_default().to_string();
                    let target = parts.next().unwrap_or_default().to_string();
                    (source, target)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Published ports `[IP:]HOST:CONTAINER` as (host port, container port).
fn ports_of(name: &str, svc: &Value) -> Vec<(u16, u16)> {
    let items = svc["ports"].as_sequence().cloned().unwrap_or_default();
    items
        .iter()
        .map(|v| {
            let s = str_of(v, "port");
            let parts: Vec<&str> = s.rsplitn(3, ':').collect();
            let port = |p: &str| -> u16 {
                p.parse().unwrap_or_else(|_| panic!("service {name}: bad port in {s:?}"))
            };
            assert!(parts.len() >= 2, "service {name}: port {s:?} must be HOST:CONTAINER");
            (port(parts[1]), port(parts[0]))
        })
        .collect()
}

/// Parse the service's command as `meridian ...` and check it is `node --config`.
fn check_node_command(name: &str, argv: &[String]) {
    let full = std::iter::once("meridian".to_string()).chain(argv.iter().cloned());
    let cli = Cli::try_parse_from(full).unwrap_or_else(|e| {
        panic!("service {name}: `meridian {}` is refused:\n{e}", argv.join(" "))
    });
    let Command::Node(args) = cli.command else {
        panic!("service {name}: command must be `node ...`, got {argv:?}");
    };
    assert_eq!(
        args.config.as_deref(),
        Some(Path::new(CONFIG_IN_CONTAINER)),
        "service {name}: the node must read {CONFIG_IN_CONTAINER}"
    );
}

/// Load the config a service mounts at [`CONFIG_IN_CONTAINER`], apply its environment
/// and validate it, like `meridian node` does at start-up.
fn service_config(name: &str, svc: &Value, compose_dir: &Path) -> NodeConfig {
    let volumes = volumes_of(svc);
    let (source, _) = volumes
        .iter()
        .find(|(_, target)| target == CONFIG_IN_CONTAINER)
        .unwrap_or_else(|| panic!("service {name}: nothing is mounted at {CONFIG_IN_CONTAINER}"));
    let path = compose_dir.join(source);
    let mut cfg: NodeConfig = toml::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("service {name}: {} does not parse: {e}", path.display()));
    let env = environment_of(svc);
    cfg.apply_env(|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("service {name}: environment: {e}"));
    cfg.validate().unwrap_or_else(|e| panic!("service {name}: {}: {e}", path.display()));
    let in_volume = volumes
        .iter()
        .any(|(src, target)| !src.starts_with('.') && cfg.data_dir.starts_with(target));
    assert!(in_volume, "service {name}: data_dir {:?} is not inside a volume", cfg.data_dir);
    cfg
}

#[test]
fn compose_runs_three_valid_nodes_with_distinct_ports_and_one_bootstrap() {
    let doc = compose();
    let compose_dir = repo().join("cluster");
    let services = doc["services"].as_mapping().expect("compose has services");
    assert_eq!(services.len(), 3, "a 3-node cluster: {:?}", services.keys().collect::<Vec<_>>());

    let mut ids = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    let mut bootstrappers = Vec::new();
    let mut peer_lists = Vec::new();
    for (name, svc) in services {
        let name = str_of(name, "service name");
        check_node_command(&name, &command_of(&name, svc));
        let cfg = service_config(&name, svc, &compose_dir);
        assert!(ids.insert(cfg.id), "service {name}: duplicate node id {}", cfg.id);
        if cfg.bootstrap {
            bootstrappers.push(cfg.id);
        }

        let host = svc["hostname"].as_str().map_or(name.clone(), str::to_string);
        let me = cfg.peers.iter().find(|p| p.id == cfg.id).unwrap_or_else(|| {
            panic!("service {name}: peers does not list this node (id {})", cfg.id)
        });
        let api = format!("{host}:{}", cfg.api_addr.port());
        let raft = format!("{host}:{}", cfg.raft_addr.port());
        assert_eq!(me.api_addr, api, "service {name}: its peer entry's api_addr");
        assert_eq!(me.raft_addr, raft, "service {name}: its peer entry's raft_addr");
        assert_eq!(cfg.advertised_api_addr(), api, "service {name}: advertise_api_addr");
        assert_eq!(cfg.advertised_raft_addr(), raft, "service {name}: advertise_raft_addr");

        let ports = ports_of(&name, svc);
        assert!(!ports.is_empty(), "service {name}: the API port must be published");
        for (host_port, container_port) in ports {
            assert!(host_ports.insert(host_port), "host port {host_port} is published twice");
            assert_eq!(
                container_port,
                cfg.api_addr.port(),
                "service {name}: publishes {container_port}, the API listens on {}",
                cfg.api_addr.port()
            );
        }
        let build = &svc["build"];
        if !build.is_null() {
            let context = compose_dir.join(build["context"].as_str().unwrap_or("."));
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(context.join(dockerfile).is_file(), "service {name}: no {dockerfile}");
            assert!(
                context.join("Cargo.toml").is_file(),
                "service {name}: context is no repo root"
            );
        }
        peer_lists.push((name, cfg.peers));
    }
    assert_eq!(bootstrappers, vec![1], "exactly node 1 bootstraps the cluster");
    let (first_name, first) = &peer_lists[0];
    for (name, peers) in &peer_lists[1..] {
        assert_eq!(peers, first, "services {first_name} and {name} list different peers");
    }
    let peer_ids: BTreeSet<u64> = first.iter().map(|p| p.id).collect();
    assert_eq!(peer_ids, ids, "peers must be exactly the compose nodes");
}

#[test]
fn dockerfile_builds_in_rust_and_runs_slim_as_non_root() {
    let text = read(&repo().join("cluster/Dockerfile"));
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage build expected: {froms:?}");
    assert!(froms[0].contains("rust:"), "the build stage uses the Rust image: {}", froms[0]);
    let last = froms.last().expect("a runtime stage");
    assert!(last.contains("debian:") && last.contains("-slim"), "runtime is Debian slim: {last}");
    let user =
        text.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("the image sets USER");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as root: {user}");
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/meridian\"]"), "entrypoint is meridian");
    assert!(text.contains(CONFIG_IN_CONTAINER), "default command reads {CONFIG_IN_CONTAINER}");
    let ignore = read(&repo().join("cluster/Dockerfile.dockerignore"));
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "target/ must stay out of the context");
}

fn unit_text() -> String {
    read(&repo().join("cluster/systemd/meridian@.service"))
}

/// `Key=value` settings of a unit file (comments and sections skipped; last one wins).
fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_runs_the_node_unprivileged_and_does_not_restart_bad_config() {
    let text = unit_text();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(text.contains(section), "unit lacks {section}");
    }
    let s = unit_settings(&text);
    let exec = s.get("ExecStart").expect("ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert!(argv[0].starts_with('/') && argv[0].ends_with("/meridian"), "ExecStart: {exec}");
    let instance: Vec<String> = std::iter::once("meridian".to_string())
        .chain(argv[1..].iter().map(|a| a.replace("%i", "node-1")))
        .collect();
    let parsed = Cli::try_parse_from(instance)
        .unwrap_or_else(|e| panic!("ExecStart arguments are refused: {e}"));
    let Command::Node(args) = parsed.command else { panic!("ExecStart must run `meridian node`") };
    assert_eq!(args.config.as_deref(), Some(Path::new("/etc/meridian/node-1.toml")));
    assert!(s.get("User").is_some_and(|u| u != "root"), "User must be unprivileged");
    assert_eq!(s.get("RestartPreventExitStatus").map(String::as_str), Some("2"));
    assert_eq!(s.get("KillSignal").map(String::as_str), Some("SIGTERM"));
    assert_eq!(s.get("StateDirectory").map(String::as_str), Some("meridian/%i"));

    let example = repo().join("cluster/systemd/node-1.toml");
    let cfg: NodeConfig = toml::from_str(&read(&example)).expect("example config parses");
    cfg.validate().expect("example config is valid");
    assert_eq!(cfg.data_dir, Path::new("/var/lib/meridian/node-1"), "data_dir = StateDirectory");
}

#[test]
fn systemd_analyze_accepts_the_unit_where_available() {
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipping `systemd-analyze verify`");
        return;
    };
    assert!(out.status.success(), "systemd-analyze --version failed");
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("meridian@node-1.service");
    // The installed binary path does not exist here: point ExecStart at the test build.
    let text = unit_text().replace("/usr/local/bin/meridian", env!("CARGO_BIN_EXE_meridian"));
    std::fs::write(&unit, text).expect("write unit");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(report.trim().is_empty(), "systemd-analyze verify complains:\n{report}");
}

/// deny.toml holds: licenses, duplicate-crate bans and sources, checked offline by
/// cargo-deny when it is installed (skipped with a message otherwise;
/// MERIDIAN_REQUIRE_CARGO_DENY makes a missing tool a failure).
#[test]
fn cargo_deny_accepts_licenses_bans_and_sources() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = std::process::Command::new(&cargo)
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("MERIDIAN_REQUIRE_CARGO_DENY").is_none(),
            "cargo-deny is required but not installed"
        );
        eprintln!("SKIPPED: cargo-deny not installed (`cargo install --locked cargo-deny`)");
        return;
    }
    let out = std::process::Command::new(&cargo)
        .args(["deny", "--offline", "check", "licenses", "bans", "sources"])
        .current_dir(repo())
        .output()
        .expect("run cargo deny");
    assert!(
        out.status.success(),
        "cargo deny failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("warning"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
