//! Prefill and decode speed on a checkpoint, for comparison with llama.cpp's `llama-bench`.
//!
//! `cargo run --release --example bench -- <model-dir> [--dtype q8_0] [--threads 2]
//!  [--prompt 128] [--gen 64] [--reps 3] [--bandwidth GB/s]`
//!
//! Prompt tokens are fixed pseudo-random ids (as llama-bench uses random tokens); decode feeds
//! the greedy choice back. Prints medians over `--reps` runs and a `RESULT` line for scripts.
//! With `DEEPSEEK_PROFILE=1` it also prints where prefill and decode time went per part
//! (attention, router, experts, dense MLP, lm_head; DeepSeek layers), summed over all runs.

use std::sync::Arc;
use std::time::Instant;

use deepseek_core::{profile, LoadOptions, Model, Session, SessionOptions, WeightDtype};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: bench <model-dir> [--dtype D] [--threads T] [--prompt N] [--gen N] [--reps N] [--bandwidth GB/s]")?;
    let (mut dtype, mut threads, mut prompt, mut gen, mut reps, mut bandwidth) = (
        WeightDtype::Auto,
        None,
        128usize,
        64usize,
        3usize,
        None::<f64>,
    );
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dtype" => dtype = val()?.parse()?,
            "--threads" => threads = Some(val()?.parse()?),
            "--prompt" => prompt = val()?.parse()?,
            "--gen" => gen = val()?.parse()?,
            "--reps" => reps = val()?.parse()?,
            "--bandwidth" => bandwidth = Some(val()?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let t0 = Instant::now();
    let model = Arc::new(Model::load(&dir, LoadOptions { threads, dtype })?);
    let load = t0.elapsed().as_secs_f64();
    let vocab = model.config().vocab_size as u64;
    let mut seed = 0x2545F4914F6CDD1Du64;
    let ids: Vec<u32> = (0..prompt)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (2 + seed % (vocab.min(100_000) - 2)) as u32
        })
        .collect();
    let bytes = model.weight_bytes_per_token();
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    let (mut pre_split, mut dec_split) = ([0f64; 5], [0f64; 5]);
    let add = |acc: &mut [f64; 5]| {
        for (a, (_, s)) in acc.iter_mut().zip(profile::take()) {
            *a += s;
        }
    };
    for _ in 0..reps.max(1) {
        let mut s = Session::new(
            model.clone(),
            SessionOptions {
                threads,
                ..Default::default()
            },
        )?;
        profile::take();
        let t = Instant::now();
        let logits = s.eval(&ids)?;
        let mut next = argmax(logits);
        pre.push(prompt as f64 / t.elapsed().as_secs_f64());
        add(&mut pre_split);
        let t = Instant::now();
        for _ in 0..gen {
            next = argmax(s.eval(&[next])?);
        }
        dec.push(gen as f64 / t.elapsed().as_secs_f64());
        add(&mut dec_split);
    }
    let (p, d) = (median(pre), median(dec));
    println!(
        "model {dir} dtype {dtype:?} threads {} (loaded in {load:.1}s)",
        model.threads()
    );
    println!("prefill {prompt} tokens: {p:.1} tok/s");
    println!(
        "decode {gen} tokens: {d:.1} tok/s, {:.1} MB of weights per token = {:.1} GB/s",
        bytes as f64 / 1e6,
        d * bytes as f64 / 1e9
    );
    let pct = bandwidth.map(|bw| d * bytes as f64 / 1e9 / bw * 100.0);
    if let Some(pct) = pct {
        println!(
            "decode at {pct:.0}% of the {:.1} GB/s bandwidth ceiling",
            bandwidth.unwrap_or(0.0)
        );
    }
    if profile::enabled() {
        let runs = reps.max(1) as f64;
        for (what, split, tokens) in [("prefill", pre_split, prompt), ("decode", dec_split, gen)] {
            let total: f64 = split.iter().sum();
            let parts: Vec<String> = profile::take()
                .iter()
                .zip(split)
                .map(|((name, _), s)| {
                    format!(
                        "{name} {:.2} ms ({:.0}%)",
                        s * 1e3 / runs / tokens.max(1) as f64,
                        s / total.max(1e-12) * 100.0
                    )
                })
                .collect();
            println!("{what} split per token: {}", parts.join(", "));
        }
    }
    println!("RESULT prefill_tok_s={p:.2} decode_tok_s={d:.2} bytes_per_token={bytes}");
    Ok(())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i as u32)
        .unwrap_or(0)
}
