//! Any bytes a client sends as a request frame: decoding must return, never panic or abort.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kappa_broker::decode_request(bytes::Bytes::copy_from_slice(data));
});
