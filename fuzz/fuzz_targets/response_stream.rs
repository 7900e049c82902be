//! Server bytes through the response head parser and body framing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice::http1::fuzzing::response_stream(data));
