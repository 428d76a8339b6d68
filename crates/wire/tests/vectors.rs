//! Every Jupyter-shaped message captured from a stock ipyparallel 9.2 cluster
//! (`tests/vectors/`, a copy of the project's shared vectors) must decode, verify, and
//! re-sign to the same bytes.

use base64::Engine as _;
use corral_wire::{locate_delimiter, Message, Signer, DELIMITER};
use serde_json::Value;
use std::path::Path;

const KEY: &[u8] = b"f141161c-0bdbdc27ef498d3c5e9fe024";

fn records() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 17, "vectors missing in {}", dir.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            out.push((name.clone(), serde_json::from_str(line).unwrap()));
        }
    }
    out
}

fn frames(record: &Value) -> Vec<Vec<u8>> {
    record["frames_b64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            base64::engine::general_purpose::STANDARD
                .decode(f.as_str().unwrap())
                .unwrap()
        })
        .collect()
}

#[test]
fn every_captured_message_decodes_verifies_and_resigns_byte_for_byte() {
    let signer = Signer::new(KEY);
    let mut checked = 0;
    for (file, record) in records() {
        let Some(decoded) = record.get("decoded") else {
            continue;
        };
        let raw = frames(&record);
        let msg = Message::decode(&raw, &signer)
            .unwrap_or_else(|e| panic!("{file} seq {}: {e}", record["seq"]));
        assert_eq!(
            serde_json::to_value(&msg.header).unwrap(),
            decoded["header"],
            "{file}"
        );
        assert_eq!(msg.parent_header, decoded["parent_header"], "{file}");
        assert_eq!(msg.metadata, decoded["metadata"], "{file}");
        assert_eq!(msg.content, decoded["content"], "{file}");
        assert_eq!(
            msg.idents.len() as u64,
            decoded["idents_n"].as_u64().unwrap()
        );
        assert_eq!(
            msg.buffers.len() as u64,
            decoded["buffers_n"].as_u64().unwrap()
        );

        // Re-sign the original JSON bytes and reassemble: identical frames.
        let d = locate_delimiter(&raw).unwrap();
        let sig = signer.sign([&raw[d + 2], &raw[d + 3], &raw[d + 4], &raw[d + 5]]);
        assert_eq!(sig, raw[d + 1], "{file}: signature differs");
        let mut rebuilt: Vec<Vec<u8>> = raw[..d].to_vec();
        rebuilt.push(DELIMITER.to_vec());
        rebuilt.push(sig);
        rebuilt.extend_from_slice(&raw[d + 2..]);
        assert_eq!(rebuilt, raw, "{file}");

        // Our own encoding of the parsed message verifies and parses back to it.
        let again = Message::decode(&msg.encode(&signer), &signer).unwrap();
        assert_eq!(again, msg, "{file}");
        checked += 1;
    }
    assert!(checked >= 600, "only {checked} messages checked");
}

#[test]
fn a_wrong_key_rejects_every_captured_message() {
    let signer = Signer::new(b"not-the-key");
    for (_, record) in records() {
        if record.get("decoded").is_some() {
            assert!(Message::decode(&frames(&record), &signer).is_err());
        }
    }
}
