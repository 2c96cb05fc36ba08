//! Chat with a DeepSeek checkpoint: an interactive multi-turn REPL, or one answer with
//! `--prompt`. Reasoning is streamed dimmed (or under a header when not on a terminal) apart
//! from the answer; usage and tok/s follow each reply.
//!
//! `cargo run --release --example chat -- [--model DIR] [--tokenizer DIR] [--prompt TEXT] [...]`
//! (`--help` lists every flag). Without `--model` it talks to r1-nano (`models/r1-nano`), our
//! tiny R1-architecture model that does small arithmetic ("What is 4738 + 256?").

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use deepseek_core::{
    CacheDtype, EventKind, GenerateParams, GenerationResult, Generator, LoadOptions, Message,
    SessionOptions, WeightDtype,
};

const USAGE: &str = "\
usage: chat [--model DIR] [options]

  --model DIR               checkpoint folder (config.json + safetensors;
                            default: models/r1-nano, which answers e.g. \"What is 4738 + 256?\")
  --tokenizer DIR           tokenizer folder (default: the model folder)
  --prompt TEXT             answer TEXT once and exit (default: interactive chat)
  --system TEXT             system prompt
  --raw                     with --prompt: continue TEXT as is, without the chat template
  --max-tokens N            most tokens per reply (default: until EOS or the context is full)
  --context N               context length (default: the model's)
  --threads N               worker threads (default: all cores)
  --dtype D                 weight format: auto (as stored), f32, bf16, f16, q8_0, q4_0
  --cache-dtype C           KV cache format: f32 (default, exact), bf16 (half the memory),
                            q8_0 (34 bytes per 32 values)
  --temperature T           0 = greedy (default: generation_config.json, else 1)
  --top-k K  --top-p P  --min-p P
  --repetition-penalty R  --frequency-penalty F  --presence-penalty P
  --seed S                  sampling seed (default: random)
  --stop TEXT               stop string (repeatable)
  --hide-reasoning          do not print the reasoning
  --no-color                no ANSI colours

In the chat: /reset forgets the conversation, /exit (or Ctrl-D) quits.";

struct Args {
    model: PathBuf,
    tokenizer: Option<PathBuf>,
    prompt: Option<String>,
    system: Option<String>,
    raw: bool,
    threads: Option<usize>,
    dtype: WeightDtype,
    cache_dtype: CacheDtype,
    context: Option<usize>,
    hide_reasoning: bool,
    color: bool,
    params: Vec<(String, String)>,
    stop: Vec<String>,
    max_tokens: Option<usize>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: cannot parse {value:?}"))
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut model = None;
    let mut a = Args {
        model: PathBuf::new(),
        tokenizer: None,
        prompt: None,
        system: None,
        raw: false,
        threads: None,
        dtype: WeightDtype::Auto,
        cache_dtype: CacheDtype::default(),
        context: None,
        hide_reasoning: false,
        color: std::io::stdout().is_terminal(),
        params: Vec::new(),
        stop: Vec::new(),
        max_tokens: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--model" => model = Some(PathBuf::from(value()?)),
            "--tokenizer" => a.tokenizer = Some(PathBuf::from(value()?)),
            "--prompt" => a.prompt = Some(value()?),
            "--system" => a.system = Some(value()?),
            "--raw" => a.raw = true,
            "--threads" => a.threads = Some(parse(&flag, &value()?)?),
            "--dtype" => {
                a.dtype = value()?
                    .parse()
                    .map_err(|e: deepseek_core::Error| e.to_string())?
            }
            "--cache-dtype" => {
                a.cache_dtype = value()?
                    .parse()
                    .map_err(|e: deepseek_core::Error| e.to_string())?
            }
            "--context" => a.context = Some(parse(&flag, &value()?)?),
            "--max-tokens" => a.max_tokens = Some(parse(&flag, &value()?)?),
            "--stop" => a.stop.push(value()?),
            "--hide-reasoning" => a.hide_reasoning = true,
            "--no-color" => a.color = false,
            "--temperature"
            | "--top-k"
            | "--top-p"
            | "--min-p"
            | "--repetition-penalty"
            | "--frequency-penalty"
            | "--presence-penalty"
            | "--seed" => {
                let v = value()?;
                a.params.push((flag, v));
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    a.model = model.unwrap_or_else(default_model);
    if a.raw && a.prompt.is_none() {
        return Err("--raw needs --prompt".into());
    }
    Ok(a)
}

/// r1-nano in this source tree, found from any working directory.
fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/r1-nano")
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let load = LoadOptions {
        threads: args.threads,
        dtype: args.dtype,
    };
    let generator = Generator::load(&args.model, args.tokenizer.as_deref(), load)
        .map_err(|e| match (&e, &args.tokenizer) {
            (deepseek_core::Error::Io { path, .. }, None) if path.ends_with("tokenizer.json") => {
                format!("{e} (no tokenizer in the model folder: pass --tokenizer DIR)").into()
            }
            _ => Box::<dyn std::error::Error>::from(e),
        })?
        .with_session_options(SessionOptions {
            context_length: args.context,
            cache_dtype: args.cache_dtype,
            ..Default::default()
        });
    let mut params = generator.default_params();
    apply_flags(&mut params, &args)?;
    params.validate()?;

    let mut out = Printer::new(&args);
    if let Some(prompt) = &args.prompt {
        let on_event = |e: &deepseek_core::Event| out.event(e);
        let result = if args.raw {
            generator.generate_with(prompt, &params, on_event)?
        } else {
            let mut messages: Vec<Message> = args.system.iter().map(Message::system).collect();
            messages.push(Message::user(prompt.as_str()));
            generator.chat_stream(&messages, &params)?.run(on_event)?
        };
        out.done(&result);
        return Ok(());
    }

    let mut chat = generator.chat_session()?;
    if let Some(system) = &args.system {
        chat.push(Message::system(system.as_str()));
    }
    eprintln!("chatting with {} (/reset, /exit)", args.model.display());
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                chat.reset();
                if let Some(system) = &args.system {
                    chat.push(Message::system(system.as_str()));
                }
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        let sent = chat.send_with(line.trim_end_matches(['\n', '\r']), &params, |e| {
            out.event(e)
        });
        // A rejected turn (a message past the context, a template error) leaves the
        // conversation as it was: say why and keep chatting.
        match sent {
            Ok(result) => out.done(&result),
            Err(e @ deepseek_core::Error::ContextOverflow { .. }) => {
                eprintln!("error: {e} (/reset starts a new conversation)")
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

fn apply_flags(params: &mut GenerateParams, args: &Args) -> Result<(), String> {
    let s = &mut params.sampling;
    for (flag, v) in &args.params {
        match flag.as_str() {
            "--temperature" => s.temperature = parse(flag, v)?,
            "--top-k" => s.top_k = parse(flag, v)?,
            "--top-p" => s.top_p = parse(flag, v)?,
            "--min-p" => s.min_p = parse(flag, v)?,
            "--repetition-penalty" => s.repetition_penalty = parse(flag, v)?,
            "--frequency-penalty" => s.frequency_penalty = parse(flag, v)?,
            "--presence-penalty" => s.presence_penalty = parse(flag, v)?,
            "--seed" => s.seed = Some(parse(flag, v)?),
            _ => unreachable!("filtered in parse_args"),
        }
    }
    params.stop.clone_from(&args.stop);
    if args.max_tokens.is_some() {
        params.max_tokens = args.max_tokens;
    }
    Ok(())
}

/// Streams events to stdout: reasoning dimmed (terminal) or under a header (pipe).
struct Printer {
    color: bool,
    hide_reasoning: bool,
    last: Option<EventKind>,
}

impl Printer {
    fn new(args: &Args) -> Self {
        Printer {
            color: args.color,
            hide_reasoning: args.hide_reasoning,
            last: None,
        }
    }

    fn event(&mut self, e: &deepseek_core::Event) -> bool {
        let mut stdout = std::io::stdout().lock();
        if e.kind == EventKind::Reasoning && self.hide_reasoning {
            return true;
        }
        if self.last != Some(e.kind) {
            let shown_reasoning = self.last == Some(EventKind::Reasoning);
            match (e.kind, self.color) {
                (EventKind::Reasoning, true) => write!(stdout, "\x1b[2m"),
                (EventKind::Reasoning, false) => writeln!(stdout, "[reasoning]"),
                (EventKind::Content, true) if shown_reasoning => write!(stdout, "\x1b[0m\n\n"),
                (EventKind::Content, false) if shown_reasoning => write!(stdout, "\n\n[answer]\n"),
                (EventKind::Content, _) => Ok(()),
                // The chat example passes no tools, so no calls are parsed.
                (EventKind::ToolCall, _) => Ok(()),
            }
            .ok();
            self.last = Some(e.kind);
        }
        // A closed stdout (e.g. `| head`) stops generation instead of failing.
        stdout.write_all(e.text.as_bytes()).is_ok() && stdout.flush().is_ok()
    }

    fn done(&mut self, r: &GenerationResult) {
        if self.color && self.last == Some(EventKind::Reasoning) {
            print!("\x1b[0m");
        }
        println!();
        self.last = None;
        let u = &r.usage;
        eprintln!(
            "[{} prompt tokens ({} cached), {} generated, finish: {} | prefill {:.1} tok/s, decode {:.1} tok/s]",
            u.prompt_tokens,
            u.cached_tokens,
            u.completion_tokens,
            r.finish_reason.as_str(),
            u.prefill_tok_s,
            u.decode_tok_s
        );
    }
}
