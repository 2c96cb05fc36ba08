//! Loads a checkpoint folder, evaluates token ids and prints the greedy continuation.
//!
//! `cargo run --release --example logits -- <model-dir> [ids...] [--new N] [--threads T]`

use std::sync::Arc;
use std::time::Instant;

use deepseek_core::{LoadOptions, Model, Session, SessionOptions};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: logits <model-dir> [ids...] [--new N] [--threads T]")?;
    let (mut ids, mut new, mut threads) = (Vec::new(), 16usize, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--new" => new = args.next().ok_or("--new needs a number")?.parse()?,
            "--threads" => threads = Some(args.next().ok_or("--threads needs a number")?.parse()?),
            id => ids.push(
                id.parse::<u32>()
                    .map_err(|_| format!("not a token id: {id}"))?,
            ),
        }
    }
    let t0 = Instant::now();
    let model = Arc::new(Model::load(
        &dir,
        LoadOptions {
            threads,
            ..Default::default()
        },
    )?);
    let c = model.config();
    if ids.is_empty() {
        ids = c.bos_token_id.into_iter().collect();
        if ids.is_empty() {
            ids.push(0);
        }
    }
    println!(
        "{:?}: {} layers, hidden {}, vocab {}, loaded in {:.2?}",
        c.model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size,
        t0.elapsed()
    );
    let mut session = Session::new(
        model,
        SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    let t1 = Instant::now();
    let mut logits = session.eval(&ids)?.to_vec();
    let prefill = t1.elapsed();
    let t2 = Instant::now();
    let mut out = Vec::new();
    for _ in 0..new {
        let next = argmax(&logits);
        out.push(next);
        if out.len() == new {
            break;
        }
        logits = session.eval(&[next])?.to_vec();
    }
    let decode = t2.elapsed();
    println!("prompt {ids:?}");
    println!("greedy {out:?}");
    println!(
        "prefill {} tokens in {:.2?}, decode {} tokens in {:.2?} ({:.1} tok/s), cache {} bytes/token",
        ids.len(),
        prefill,
        out.len().saturating_sub(1),
        decode,
        out.len().saturating_sub(1) as f64 / decode.as_secs_f64().max(1e-9),
        session.cache_bytes_per_token()
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
