#![no_main]
// The target's body lives in ubtc_bitcoin::fuzzing so that `cargo test` runs it over
// the seed corpus on stable Rust (crates/bitcoin/tests/fuzz_smoke.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ubtc_bitcoin::fuzzing::fuzz_attestation(data);
});
