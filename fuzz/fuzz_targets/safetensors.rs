#![no_main]

libfuzzer_sys::fuzz_target!(init: deepseek_fuzz::init(), |data: &[u8]| deepseek_fuzz::safetensors(data));
