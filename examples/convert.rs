//! Converts a checkpoint (a Hugging Face folder or a GGUF file) into a GGUF file that this
//! crate and llama.cpp load, its matrices converted once, so later loads need no conversion.
//!
//! `cargo run --release --example convert -- SRC DST.gguf [--dtype q4_0] [--tokenizer DIR] [--threads N]`

use std::path::PathBuf;
use std::time::Instant;

use deepseek_core::loader::convert_to_gguf;
use deepseek_core::WeightDtype;

const USAGE: &str =
    "usage: convert SRC DST.gguf [--dtype auto|f32|bf16|f16|q8_0|q4_0|q4_1|q4_k|q6_k|q4_k_m] \
                     [--tokenizer DIR|FILE.gguf] [--threads N]";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut paths, mut dtype, mut tokenizer, mut threads) =
        (Vec::new(), WeightDtype::Auto, None, None);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--dtype" => dtype = value()?.parse()?,
            "--tokenizer" => tokenizer = Some(PathBuf::from(value()?)),
            "--threads" => threads = Some(value()?.parse::<usize>()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if a.starts_with("--") => return Err(format!("unknown flag {a}\n{USAGE}").into()),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [src, dst] = &paths[..] else {
        return Err(USAGE.into());
    };
    let threads = match threads {
        Some(0) => return Err("--threads must be >= 1".into()),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let t0 = Instant::now();
    convert_to_gguf(src, dst, dtype, tokenizer.as_deref(), threads)?;
    let bytes = std::fs::metadata(dst)?.len();
    println!(
        "wrote {} ({:.1} MB, {dtype:?}) in {:.1}s",
        dst.display(),
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
