//! Client bytes through the request head parser and body framing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::http1::fuzzing::request_stream(data));
