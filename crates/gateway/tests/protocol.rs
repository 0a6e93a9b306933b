//! `schemas/asyncapi.yaml` and the gateway cannot drift: every frame the
//! gateway parses or sends is described there, and nothing else is.

use std::collections::BTreeSet;

use im_gateway::frames::{OPS, SERVER_OPS};

const ASYNCAPI: &str = include_str!("../../../schemas/asyncapi.yaml");

/// The messages under `components: messages:` (four spaces in), by side.
fn described(side: &str) -> BTreeSet<String> {
    let prefix = format!("    {side}_");
    ASYNCAPI
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.strip_suffix(':'))
        .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect()
}

fn set(ops: &[&str]) -> BTreeSet<String> {
    ops.iter().map(|op| op.to_string()).collect()
}

/// String literals that follow `pattern` in a source file.
fn literals_after(text: &str, pattern: &str) -> BTreeSet<String> {
    text.match_indices(pattern)
        .filter_map(|(at, _)| {
            let rest = &text[at + pattern.len()..];
            let end = rest.find('"')?;
            let name = &rest[..end];
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_client_frame_is_described_and_nothing_else() {
    assert_eq!(described("client"), set(OPS));
}

#[test]
fn every_server_frame_is_described_and_nothing_else() {
    assert_eq!(described("server"), set(&SERVER_OPS));
}

#[test]
fn every_op_the_code_sends_is_a_server_op() {
    let known = set(&SERVER_OPS);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut sent = BTreeSet::new();
    let mut dirs: Vec<std::path::PathBuf> = [
        "gateway/src",
        "../functions/push/src",
        "../functions/dedupe/src",
    ]
    .iter()
    .map(|dir| format!("{root}/{dir}").into())
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                sent.extend(literals_after(&text, "\"op\": \""));
                sent.extend(literals_after(&text, "[\"op\"] = json!(\""));
                sent.extend(literals_after(&text, "insert(\"op\".into(), json!(\""));
            }
        }
    }
    // The sync item → pushed frame table.
    let table = std::fs::read_to_string(format!("{root}/events/src/sync.rs")).unwrap();
    sent.extend(literals_after(&table, "(_) => \""));
    let unknown: Vec<&String> = sent.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "sent but not in SERVER_OPS / asyncapi.yaml: {unknown:?}"
    );
    assert!(sent.len() > 15, "the scan found the frames: {sent:?}");
}
