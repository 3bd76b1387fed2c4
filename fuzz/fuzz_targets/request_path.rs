#![no_main]
use std::sync::OnceLock;

static PROXY: OnceLock<switchyard_fuzz::RequestPath> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    PROXY
        .get_or_init(switchyard_fuzz::RequestPath::start)
        .run(data)
});
