"""Chat with a DeepSeek checkpoint: an interactive multi-turn REPL, or one answer with --prompt.

    python examples/python/chat.py --model DIR [--tokenizer DIR] [--prompt TEXT] [...]

Reasoning (R1's <think> section) is streamed dimmed on a terminal, or under a "reasoning:"
header otherwise, apart from the answer; token counts and tok/s follow each reply. In the chat,
/reset forgets the conversation and /exit (or Ctrl-D) quits; Ctrl-C stops a reply at the next
token. The Python twin of examples/chat.rs; needs the module (`pip install ./deepseek-py`).

On the test fixture (a tiny random model with R1's vocabulary: the text is gibberish, the
plumbing is real), from the repository root:

    python examples/python/chat.py \\
        --model deepseek-core/tests/fixtures/v3_r1tok \\
        --tokenizer deepseek-core/tests/fixtures/tokenizers/deepseek-r1 \\
        --prompt "What is 1+1?" --max-tokens 32
"""

import argparse
import sys
from typing import Any, Dict, Iterable, Optional

import deepseek_rs

DIM, RESET = "\x1b[2m", "\x1b[0m"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint folder (config.json + safetensors)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model folder)")
    p.add_argument("--prompt", help="answer PROMPT once and exit (default: interactive chat)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--raw", action="store_true",
                   help="with --prompt: continue PROMPT as is, without the chat template")
    p.add_argument("--max-tokens", type=int, help="most tokens per reply (default: until EOS)")
    p.add_argument("--context", type=int, help="context length (default: the model's)")
    p.add_argument("--threads", type=int, help="worker threads (default: all cores)")
    p.add_argument("--dtype", default="auto", help="auto (as stored), f32, bf16, f16, q8_0, q4_0")
    p.add_argument("--temperature", type=float,
                   help="0 = greedy (default: generation_config.json, else 1)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--frequency-penalty", type=float)
    p.add_argument("--presence-penalty", type=float)
    p.add_argument("--seed", type=int, help="sampling seed (default: random)")
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--hide-reasoning", action="store_true", help="do not print the reasoning")
    p.add_argument("--no-color", action="store_true", help="no ANSI colours")
    args = p.parse_args()
    if args.raw and args.prompt is None:
        p.error("--raw needs --prompt")
    return args


class Printer:
    """Prints chunks as they come: reasoning dimmed (or under a header), then the answer."""

    def __init__(self, color: bool, hide_reasoning: bool) -> None:
        self.color = color
        self.hide_reasoning = hide_reasoning
        self.section: Optional[str] = None

    def chunk(self, c: deepseek_rs.Chunk) -> None:
        if c.kind == "reasoning" and self.hide_reasoning:
            return
        if c.kind != self.section:
            self.switch(c.kind)
        text = c.text
        if c.kind == "reasoning" and self.color:
            text = DIM + text + RESET
        sys.stdout.write(text)
        sys.stdout.flush()

    def switch(self, kind: str) -> None:
        if self.section is not None:
            sys.stdout.write("\n\n")
        if not self.color:
            sys.stdout.write("reasoning:\n" if kind == "reasoning" else "answer:\n")
        self.section = kind

    def done(self, r: Optional[deepseek_rs.GenerationResult], interrupted: bool = False) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()
        self.section = None
        if r is None:
            return
        u = r.usage
        note = " (interrupted)" if interrupted else ""
        print(
            f"[{r.finish_reason}{note}: prompt {u.prompt_tokens} tokens ({u.cached_tokens} cached, "
            f"{u.prefill_tok_s:.1f} tok/s), {u.completion_tokens} generated at "
            f"{u.decode_tok_s:.1f} tok/s]",
            file=sys.stderr,
        )


def stream(out: Printer, chunks: deepseek_rs.GenerationStream) -> None:
    """Prints a reply; Ctrl-C stops it at the next token and keeps what was generated."""
    try:
        for c in chunks:
            out.chunk(c)
    except KeyboardInterrupt:
        chunks.close()
        out.done(chunks.result, interrupted=True)
        return
    out.done(chunks.result)


def one_shot(model: deepseek_rs.Model, args: argparse.Namespace, params: Dict[str, Any],
             out: Printer) -> None:
    if args.raw:
        stream(out, model.generate(args.prompt, stream=True, **params))
        return
    chat = deepseek_rs.ChatSession(model, system=args.system)
    stream(out, chat.send(args.prompt, stream=True, **params))


def repl(model: deepseek_rs.Model, args: argparse.Namespace, params: Dict[str, Any],
         out: Printer, lines: Iterable[str]) -> None:
    chat = deepseek_rs.ChatSession(model, system=args.system)
    print(f"chatting with {args.model} (/reset, /exit)", file=sys.stderr)
    for line in lines:
        text = line.rstrip("\r\n")
        if text.strip() in ("/exit", "/quit"):
            return
        if text.strip() == "/reset":
            chat.reset()
            print("(conversation cleared)", file=sys.stderr)
        elif text.strip():
            try:
                stream(out, chat.send(text, stream=True, **params))
            except deepseek_rs.DeepseekError as e:  # e.g. the context is full: /reset
                print(f"error: {e}", file=sys.stderr)


def prompts() -> Iterable[str]:
    while True:
        try:
            yield input("> ")
        except EOFError:
            print(file=sys.stderr)
            return
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return


def main() -> int:
    args = parse_args()
    params = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "frequency_penalty": args.frequency_penalty,
        "presence_penalty": args.presence_penalty,
        "seed": args.seed,
        "stop": args.stop,
    }
    try:
        model = deepseek_rs.Model(args.model, dtype=args.dtype, threads=args.threads,
                                  context_length=args.context, tokenizer=args.tokenizer)
        if model.tokenizer is None:
            print(f"error: no tokenizer.json in {args.model}: pass --tokenizer DIR",
                  file=sys.stderr)
            return 1
        out = Printer(color=sys.stdout.isatty() and not args.no_color,
                      hide_reasoning=args.hide_reasoning)
        if args.prompt is not None:
            one_shot(model, args, params, out)
        else:
            repl(model, args, params, out, prompts())
    except deepseek_rs.DeepseekError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
