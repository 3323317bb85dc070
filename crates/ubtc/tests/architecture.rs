//! The dependency direction of the workspace, as `docs/architecture.md` documents it:
//! a library crate may depend only on crates listed before it in [`ORDER`]. Read from
//! `cargo metadata`, so a new `[dependencies]` line that points the wrong way fails
//! here rather than in review. Dev-dependencies are not checked: tests may reach up
//! (a chain adapter's test drives the real pipeline) without the library linking it.

use std::collections::BTreeSet;
use std::process::Command;

/// The workspace's crates, lowest first (docs/architecture.md, "Dependency order").
const ORDER: &[&str] = &[
    "ubtc-core",
    "ubtc-bitcoin",
    "ubtc-chains",
    "ubtc-guardian",
    "ubtc-store",
    "ubtc-pipeline",
    "ubtc-limits",
    "ubtc-api",
    "ubtc",
];

/// Edges that point up today and are to be removed: the guardian daemon holds a key
/// and should link neither the database nor the pipeline. Its reserve-operation wire
/// types come from the pipeline and its benchmark uses the store; once those move to
/// a crate below it, delete these lines (this test fails if an edge listed here is gone,
/// so the list cannot go stale).
const TO_BE_REMOVED: &[(&str, &str)] = &[
    ("ubtc-guardian", "ubtc-pipeline"),
    ("ubtc-guardian", "ubtc-store"),
];

/// Every normal or build dependency from one workspace crate on another.
fn workspace_edges() -> BTreeSet<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| p["name"].as_str().expect("name").to_owned())
        .collect();
    for m in &members {
        assert!(
            ORDER.contains(&m.as_str()),
            "crate {m} is not placed in the dependency order: add it to ORDER here and to docs/architecture.md"
        );
    }
    let mut edges = BTreeSet::new();
    for p in meta["packages"].as_array().expect("packages") {
        let from = p["name"].as_str().expect("name");
        for d in p["dependencies"].as_array().expect("dependencies") {
            let to = d["name"].as_str().expect("name");
            if d["kind"].as_str() == Some("dev") || !members.contains(to) {
                continue;
            }
            edges.insert((from.to_owned(), to.to_owned()));
        }
    }
    edges
}

fn rank(name: &str) -> usize {
    ORDER
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("{name} is not in ORDER"))
}

#[test]
fn library_crates_depend_only_on_crates_below_them() {
    let edges = workspace_edges();
    let upward: Vec<_> = edges
        .iter()
        .filter(|(from, to)| rank(to) >= rank(from))
        .filter(|(from, to)| !TO_BE_REMOVED.contains(&(from.as_str(), to.as_str())))
        .collect();
    assert!(
        upward.is_empty(),
        "dependencies that point up the documented order (docs/architecture.md): {upward:?}"
    );
    for (from, to) in TO_BE_REMOVED {
        assert!(
            rank(to) >= rank(from),
            "{from} -> {to} points down: it is allowed anyway, drop it from TO_BE_REMOVED"
        );
        assert!(
            edges.contains(&(from.to_string(), to.to_string())),
            "{from} no longer depends on {to}: drop the edge from TO_BE_REMOVED"
        );
    }
}

#[test]
fn the_order_check_sees_real_edges() {
    // Guards the test above against passing on an empty graph (a changed metadata
    // format, a filter that drops everything).
    let edges = workspace_edges();
    for (from, to) in [
        ("ubtc-bitcoin", "ubtc-core"),
        ("ubtc-pipeline", "ubtc-store"),
        ("ubtc", "ubtc-api"),
    ] {
        assert!(
            edges.contains(&(from.to_owned(), to.to_owned())),
            "{from} -> {to} missing from {edges:?}"
        );
    }
    assert!(
        !edges.contains(&("ubtc-chains".to_owned(), "ubtc-pipeline".to_owned())),
        "a dev-dependency was counted as a library edge"
    );
}
