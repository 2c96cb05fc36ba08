#![no_main]

libfuzzer_sys::fuzz_target!(init: deepseek_fuzz::init_capi(), |data: &[u8]| deepseek_fuzz::capi(data));
