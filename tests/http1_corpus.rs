//! The codec's fuzz targets (`fuzz/`, run with cargo-fuzz on nightly) run in
//! every `cargo test` too: over the seed corpus, over every crash a fuzzing
//! run found (`fuzz/regressions/`), and over a fixed series of mutations of
//! the seeds, so the properties they check hold on stable without libFuzzer.

use std::path::{Path, PathBuf};

use sluice::http1::fuzzing::{request_stream, response_stream};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("read corpus file");
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

/// Runs `target` over every stored input, naming the one that fails.
fn replay(name: &str, target: fn(&[u8])) {
    let inputs = inputs(name);
    assert!(!inputs.is_empty(), "no corpus for {name}");
    for (path, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| target(&bytes));
        assert!(outcome.is_ok(), "{name} failed on {}", path.display());
    }
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that matter to HTTP/1.1 framing, favoured by the mutations.
const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"0\r\n\r\n",
    b"0\r\n\n",
    b";",
    b":",
    b" ",
    b"\t",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 3\r\n",
    b"ffffffffffffffff",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"\x00",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = rng.next() as u8,
            1 if at < bytes.len() => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                bytes.splice(at..at, piece.iter().copied());
            }
            _ => {
                if let Some(&first) = bytes.first() {
                    bytes[0] = first.wrapping_add(rng.next() as u8);
                }
            }
        }
    }
    bytes
}

fn mutations(name: &str, target: fn(&[u8]), rounds: usize) {
    let seeds: Vec<Vec<u8>> = inputs(name).into_iter().map(|(_, b)| b).collect();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..rounds {
        let input = mutate(&mut rng, &seeds[round % seeds.len()]);
        let outcome = std::panic::catch_unwind(|| target(&input));
        assert!(
            outcome.is_ok(),
            "{name} failed on mutation {round}: {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn request_stream_corpus_and_regressions() {
    replay("request_stream", request_stream);
}

#[test]
fn response_stream_corpus_and_regressions() {
    replay("response_stream", response_stream);
}

#[test]
fn request_stream_survives_mutated_seeds() {
    mutations("request_stream", request_stream, 20_000);
}

#[test]
fn response_stream_survives_mutated_seeds() {
    mutations("response_stream", response_stream, 20_000);
}
