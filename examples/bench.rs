//! Prefill and decode speed on a checkpoint, for comparison with llama.cpp's `llama-bench`.
//!
//! `cargo run --release --example bench -- <model> [--dtype q8_0] [--threads 2]
//!  [--prompt 128] [--gen 64] [--depth 0] [--cache-dtype f32|bf16|q8_0] [--reps 3]
//!  [--bandwidth GB/s]`
//!
//! Prompt tokens are fixed pseudo-random ids (as llama-bench uses random tokens); decode feeds
//! the greedy choice back. `--depth N` first fills the cache with N tokens (in 512-token
//! batches, as llama.cpp's ubatch), then measures the prompt and the decode each after those N
//! tokens, like `llama-bench -d N`; the cache's memory per token is measured from the process's
//! resident anonymous memory while it fills. Prints medians over `--reps` runs and a `RESULT`
//! line for scripts. With `DEEPSEEK_PROFILE=1` it also prints where prefill and decode time
//! went per part (attention, router, experts, dense MLP, lm_head; DeepSeek layers), summed over
//! all runs.

use std::sync::Arc;
use std::time::Instant;

use deepseek_core::{
    profile, CacheDtype, LoadOptions, Model, Session, SessionOptions, WeightDtype,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Resident anonymous memory of this process in bytes (Linux), for measuring what the cache
/// really costs. Anonymous only: the memory-mapped weights are file pages that a busy machine
/// evicts and reads back at will, which made the total resident size shrink while the cache grew.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench <model> [--dtype D] [--threads T] [--prompt N] [--gen N] \
                 [--depth N] [--cache-dtype f32|bf16|q8_0] [--reps N] [--bandwidth GB/s]";
    let dir = args.next().ok_or(usage)?;
    let (mut dtype, mut threads, mut prompt, mut gen, mut reps, mut bandwidth) = (
        WeightDtype::Auto,
        None,
        128usize,
        64usize,
        3usize,
        None::<f64>,
    );
    let (mut depth, mut cache_dtype) = (0usize, CacheDtype::default());
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dtype" => dtype = val()?.parse()?,
            "--threads" => threads = Some(val()?.parse()?),
            "--prompt" => prompt = val()?.parse()?,
            "--gen" => gen = val()?.parse()?,
            "--depth" => depth = val()?.parse()?,
            "--cache-dtype" => cache_dtype = val()?.parse()?,
            "--reps" => reps = val()?.parse()?,
            "--bandwidth" => bandwidth = Some(val()?.parse()?),
            other => return Err(format!("unknown argument {other}\n{usage}").into()),
        }
    }
    let t0 = Instant::now();
    let model = Arc::new(Model::load(&dir, LoadOptions { threads, dtype })?);
    let load = t0.elapsed().as_secs_f64();
    let vocab = model.config().vocab_size as u64;
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (2 + seed % (vocab.min(100_000) - 2)) as u32
            })
            .collect()
    };
    let (depth_ids, prompt_ids) = (ids(depth), ids(prompt));
    let bytes = model.weight_bytes_per_token();
    let mut s = Session::new(
        model.clone(),
        SessionOptions {
            threads,
            cache_dtype,
            context_length: Some(
                (depth + prompt.max(gen) + 1).min(model.config().max_position_embeddings),
            ),
            ..Default::default()
        },
    )?;

    // Fill the cache to `depth` in ubatches; the resident memory it adds after the first batch
    // (which also grows the scratch buffers) is the cache's.
    let t = Instant::now();
    let (mut rss0, mut filled0) = (None, 0);
    for chunk in depth_ids.chunks(512) {
        s.eval(chunk)?;
        if rss0.is_none() {
            (rss0, filled0) = (resident_bytes(), s.len());
        }
    }
    let fill = t.elapsed().as_secs_f64();
    let measured = match (rss0, resident_bytes()) {
        (Some(a), Some(b)) if s.len() > filled0 + 512 => {
            Some(b.saturating_sub(a) as f64 / (s.len() - filled0) as f64)
        }
        _ => None,
    };

    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    let (mut pre_split, mut dec_split) = ([0f64; 5], [0f64; 5]);
    let add = |acc: &mut [f64; 5]| {
        for (a, (_, s)) in acc.iter_mut().zip(profile::take()) {
            *a += s;
        }
    };
    for _ in 0..reps.max(1) {
        let mut next = 0;
        if prompt > 0 {
            s.truncate(depth)?;
            profile::take();
            let t = Instant::now();
            let logits = s.eval(&prompt_ids)?;
            next = argmax(logits);
            pre.push(prompt as f64 / t.elapsed().as_secs_f64());
            add(&mut pre_split);
        }
        if gen > 0 {
            s.truncate(depth)?;
            profile::take();
            let t = Instant::now();
            for _ in 0..gen {
                next = argmax(s.eval(&[next])?);
            }
            dec.push(gen as f64 / t.elapsed().as_secs_f64());
            add(&mut dec_split);
        }
    }
    let (p, d) = (median(pre), median(dec));
    println!(
        "model {dir} dtype {dtype:?} threads {} cache {cache_dtype} (loaded in {load:.1}s)",
        model.threads()
    );
    if depth > 0 {
        println!(
            "depth {depth}: filled in {fill:.1}s ({:.1} tok/s); cache {} bytes/token by the \
             format, {} measured; {:.1} MiB for {} tokens",
            depth as f64 / fill,
            s.cache_bytes_per_token(),
            measured.map_or("not".into(), |m| format!("{m:.0} bytes/token")),
            (depth * s.cache_bytes_per_token()) as f64 / (1 << 20) as f64,
            depth
        );
    }
    if prompt > 0 {
        println!("prefill {prompt} tokens at depth {depth}: {p:.1} tok/s");
    }
    if gen > 0 {
        println!(
            "decode {gen} tokens at depth {depth}: {d:.1} tok/s, {:.1} MB of weights per token = {:.1} GB/s",
            bytes as f64 / 1e6,
            d * bytes as f64 / 1e9
        );
    }
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
    println!(
        "RESULT prefill_tok_s={p:.2} decode_tok_s={d:.2} bytes_per_token={bytes} depth={depth} \
         cache_bytes_per_token={} cache_measured_bytes_per_token={:.0}",
        s.cache_bytes_per_token(),
        measured.unwrap_or(0.0)
    );
    Ok(())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i as u32)
        .unwrap_or(0)
}
