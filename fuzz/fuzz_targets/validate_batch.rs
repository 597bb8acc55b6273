//! Any bytes a producer sends as a record set: validation must return, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kappa_log::batch::validate_all(data);
});
