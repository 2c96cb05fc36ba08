#![no_main]

libfuzzer_sys::fuzz_target!(init: deepseek_fuzz::init_tokenizer_text(), |data: &[u8]| deepseek_fuzz::tokenizer_text(data));
