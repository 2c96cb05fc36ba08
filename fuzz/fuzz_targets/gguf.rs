#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deepseek_fuzz::gguf(data));
