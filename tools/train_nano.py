#!/usr/bin/env python3
"""Train r1-nano: a tiny DeepSeek-V3/R1-architecture reasoning model, from scratch, on CPU.

What it makes
-------------
`models/r1-nano/` in exact Hugging Face layout: config.json (DeepseekV3ForCausalLM, Hub form),
model.safetensors (BF16; the router's correction bias F32 as in R1), tokenizer.json (byte-level
BPE with digits always split, built with the `tokenizers` library, carrying DeepSeek's special
tokens), tokenizer_config.json (R1's chat template, copied from the committed R1 tokenizer),
generation_config.json (R1's sampling defaults), heldout.json (200 held-out questions with the
answers transformers gives, greedy, on the saved BF16 weights, and its accuracy) and README.md
(the model card, numbers filled in from heldout.json).

The task
--------
R1-format chats: the user asks "What is A + B?", "What is A - B?" (A >= B) or "What is A * d?"
(A has 1-4 digits, d is 2-9). The assistant's turn reasons inside <think>...</think> place by
place before answering. Every number is first written out with its place names ("4738: ones 8,
tens 3, hundreds 7, thousands 4"), then one line per place with the carry always written ("- tens:
3+2+1=6, write 6, carry 0"), then the result is read back from the highest place. The place
names let a 4-layer model find each digit by content instead of by counting positions (see
../shared/REFERENCE.md: this format learned about 2x faster than plain digit-by-digit working).
The loss is on the assistant turn only. Held-out questions never appear in training: every
training question is checked against the held-out set.

The model
---------
hidden 192, 4 layers (the first dense), 6 heads; MLA with q_lora_rank 96, kv_lora_rank 48,
qk_nope 32 + qk_rope 16, v_head 32, YaRN RoPE (factor 4 over 512 original positions, mscale 1);
MoE with 8 routed experts (top 2, grouped: n_group 4, topk_group 2), 1 shared expert, sigmoid
`noaux_tc` routing with `norm_topk_prob` and `routed_scaling_factor` 2.5. The correction bias is
trained the aux-loss-free way of DeepSeek-V3: after every step each expert's bias moves by
gamma = 1e-3 towards an even load (up if the expert was under-loaded, down if over-loaded).

How to run (by hand, never in CI; CPU only)
-------------------------------------------
    python tools/train_nano.py                 # train (resumes from --workdir), then export
    python tools/train_nano.py --export-only   # re-export and re-measure from the last checkpoint

About 80 minutes on 2 cores (x86-64 at ~2.5 GHz). Checkpoints go to --workdir every
--ckpt-every steps, so a stopped run resumes where it was; data for step s is drawn from a
generator seeded with (seed, s), so a resumed run trains on the same batches.
"""

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import safetensors
import tokenizers
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
R1_TOKENIZER_CONFIG = REPO / "deepseek-core/tests/fixtures/tokenizers/deepseek-r1/tokenizer_config.json"

SEED = 20261201
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
THINK, END_THINK = "<think>", "</think>"
SPECIAL = [BOS, EOS, PAD, USER, ASSISTANT]
PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands"]
HELDOUT_N = 200
VOCAB_SIZE = 384


# ---------------------------------------------------------------------------------------------
# Data: questions and their worked answers


def spell(n: int) -> str:
    """'4738: ones 8, tens 3, hundreds 7, thousands 4'"""
    digits = str(n)[::-1]
    return f"{n}: " + ", ".join(f"{PLACES[i]} {d}" for i, d in enumerate(digits))


def read_back(result_digits: list[int]) -> str:
    """Reads the result from the highest place down and drops leading zeros."""
    parts = ", ".join(f"{PLACES[i]} {result_digits[i]}" for i in reversed(range(len(result_digits))))
    value = int("".join(str(d) for d in reversed(result_digits)))
    return f"result: {parts}, so {value}"


def digit(n: int, i: int) -> int:
    return (n // 10**i) % 10


def work(a: int, op: str, b: int) -> tuple[str, str]:
    """Returns (reasoning, answer) for `a op b`."""
    lines = [spell(a), spell(b)]
    out = []
    if op == "+":
        places = max(len(str(a)), len(str(b)))
        carry = 0
        for i in range(places):
            x, y = digit(a, i), digit(b, i)
            s = x + y + carry
            lines.append(f"- {PLACES[i]}: {x}+{y}+{carry}={s}, write {s % 10}, carry {s // 10}")
            out.append(s % 10)
            carry = s // 10
        if carry:
            lines.append(f"- {PLACES[places]}: carry {carry}, write {carry}")
            out.append(carry)
        c = a + b
    elif op == "-":
        places = len(str(a))
        borrow = 0
        for i in range(places):
            x, y = digit(a, i), digit(b, i)
            s = x - y - borrow
            if s < 0:
                lines.append(f"- {PLACES[i]}: {x}-{y}-{borrow}={s}, plus 10 is {s + 10}, write {s + 10}, borrow 1")
                out.append(s + 10)
                borrow = 1
            else:
                lines.append(f"- {PLACES[i]}: {x}-{y}-{borrow}={s}, write {s}, borrow 0")
                out.append(s)
                borrow = 0
        c = a - b
    else:
        places = len(str(a))
        carry = 0
        for i in range(places):
            x = digit(a, i)
            s = x * b + carry
            lines.append(f"- {PLACES[i]}: {x}*{b}+{carry}={s}, write {s % 10}, carry {s // 10}")
            out.append(s % 10)
            carry = s // 10
        if carry:
            lines.append(f"- {PLACES[places]}: carry {carry}, write {carry}")
            out.append(carry)
        c = a * b
    assert int("".join(str(d) for d in reversed(out))) == c
    lines.append(read_back(out))
    return "\n".join(lines), f"{a} {op} {b} = {c}"


def question(rng: random.Random) -> tuple[int, str, int]:
    op = rng.choices(["+", "-", "*"], weights=[0.4, 0.4, 0.2])[0]

    def number() -> int:
        n_digits = rng.randint(1, 4)
        return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)

    if op == "*":
        return number(), op, rng.randint(2, 9)
    a, b = number(), number()
    if op == "-" and a < b:
        a, b = b, a
    return a, op, b


def prompt_text(a: int, op: str, b: int) -> str:
    return f"What is {a} {op} {b}?"


def completion_text(a: int, op: str, b: int) -> str:
    """The assistant turn after the template's '<think>\\n'."""
    reasoning, answer = work(a, op, b)
    return f"{reasoning}\n{END_THINK}\n\n{answer}"


def heldout_questions() -> list[tuple[int, str, int]]:
    rng = random.Random(SEED - 1)
    seen, out = set(), []
    while len(out) < HELDOUT_N:
        q = question(rng)
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer() -> Tokenizer:
    """Byte-level BPE whose pre-tokenizer isolates every digit, so numbers stay digit by digit."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r" ?[A-Za-z\-]+| ?[^A-Za-z0-9\s]+|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(SEED + 7)
    corpus = []
    for _ in range(3000):
        q = question(rng)
        corpus.append(prompt_text(*q))
        corpus.append(completion_text(*q).replace(END_THINK, ""))
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 2,  # <think> and </think> are added after
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    # As in R1: <think> / </think> are added tokens but not special (they show in decoded text).
    tok.add_tokens([tokenizers.AddedToken(THINK, normalized=False), tokenizers.AddedToken(END_THINK, normalized=False)])
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    return tok


def tokenizer_config() -> dict:
    r1 = json.loads(R1_TOKENIZER_CONFIG.read_text())
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": r1["chat_template"],
    }


def hf_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    cfg = tokenizer_config()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=cfg["chat_template"],
    )


def prompt_ids(hf_tok: PreTrainedTokenizerFast, q) -> list[int]:
    messages = [{"role": "user", "content": prompt_text(*q)}]
    text = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith(f"{ASSISTANT}{THINK}\n")
    return hf_tok(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------
# Model


def model_config(vocab_size: int) -> DeepseekV3Config:
    return DeepseekV3Config(
        vocab_size=vocab_size,
        hidden_size=192,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        first_k_dense_replace=1,
        num_attention_heads=6,
        num_key_value_heads=6,
        n_shared_experts=1,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        q_lora_rank=96,
        kv_lora_rank=48,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        max_position_embeddings=2048,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 4.0,
            "original_max_position_embeddings": 512,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        rms_norm_eps=1e-6,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
        attention_bias=False,
    )


def hub_config(cfg: DeepseekV3Config) -> dict:
    """config.json in the Hub form real R1 checkpoints use (rope_scaling with `type`)."""
    rope = cfg.rope_parameters
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
        "first_k_dense_replace": cfg.first_k_dense_replace,
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "initializer_range": cfg.initializer_range,
        "intermediate_size": cfg.intermediate_size,
        "kv_lora_rank": cfg.kv_lora_rank,
        "max_position_embeddings": cfg.max_position_embeddings,
        "moe_intermediate_size": cfg.moe_intermediate_size,
        "moe_layer_freq": 1,
        "n_group": cfg.n_group,
        "n_routed_experts": cfg.n_routed_experts,
        "n_shared_experts": cfg.n_shared_experts,
        "norm_topk_prob": cfg.norm_topk_prob,
        "num_attention_heads": cfg.num_attention_heads,
        "num_experts_per_tok": cfg.num_experts_per_tok,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_key_value_heads": cfg.num_key_value_heads,
        "num_nextn_predict_layers": 0,
        "q_lora_rank": cfg.q_lora_rank,
        "qk_nope_head_dim": cfg.qk_nope_head_dim,
        "qk_rope_head_dim": cfg.qk_rope_head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": {
            "type": "yarn",
            "factor": rope["factor"],
            "original_max_position_embeddings": rope["original_max_position_embeddings"],
            "beta_fast": rope["beta_fast"],
            "beta_slow": rope["beta_slow"],
            "mscale": rope["mscale"],
            "mscale_all_dim": rope["mscale_all_dim"],
        },
        "rope_theta": rope["rope_theta"],
        "routed_scaling_factor": cfg.routed_scaling_factor,
        "scoring_func": "sigmoid",
        "topk_group": cfg.topk_group,
        "topk_method": "noaux_tc",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "v_head_dim": cfg.v_head_dim,
        "vocab_size": cfg.vocab_size,
    }


# ---------------------------------------------------------------------------------------------
# Training


def batch_for_step(step: int, hf_tok, heldout: set, batch: int):
    """A length-bucketed batch: 8x the batch is drawn, sorted by length, and one slice kept."""
    rng = random.Random(SEED * 1_000_003 + step)
    pool = []
    while len(pool) < batch * 8:
        q = question(rng)
        if q in heldout:
            continue
        p = prompt_ids(hf_tok, q)
        c = hf_tok(completion_text(*q), add_special_tokens=False)["input_ids"] + [hf_tok.eos_token_id]
        pool.append((p, c))
    pool.sort(key=lambda pc: len(pc[0]) + len(pc[1]))
    start = rng.randrange(0, 8) * batch
    rows = pool[start : start + batch]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((batch, width), hf_tok.pad_token_id, dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for r, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        ids[r, :n] = torch.tensor(p + c)
        labels[r, len(p) : n] = torch.tensor(c)
        mask[r, :n] = 1
    return ids, labels, mask


class LoadCounter:
    """Counts the tokens each routed expert received (real tokens only) in one step."""

    def __init__(self, model):
        self.masks = None
        self.counts = {}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                self.handles.append(gate.register_forward_hook(self.hook(i)))

    def hook(self, i):
        def f(module, args, out):
            if not module.training:
                return  # generation during evaluation is not training load
            _, _, topk = out
            keep = self.masks.reshape(-1).bool() if self.masks is not None else slice(None)
            n = module.e_score_correction_bias.numel()
            counts = torch.bincount(topk[keep].reshape(-1), minlength=n).float()
            self.counts[i] = self.counts.get(i, 0) + counts

        return f


def update_bias(model, counter: LoadCounter, gamma: float):
    """DeepSeek-V3's aux-loss-free balancing: nudge each bias towards an even expert load."""
    with torch.no_grad():
        for i, counts in counter.counts.items():
            bias = model.model.layers[i].mlp.gate.e_score_correction_bias
            bias += gamma * torch.sign(counts.mean() - counts)
    counter.counts = {}


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ---------------------------------------------------------------------------------------------
# Evaluation


def answer_of(text: str):
    """Splits a completion (after the prompt's '<think>\\n') into (reasoning, answer)."""
    if END_THINK not in text:
        return text, None
    reasoning, answer = text.split(END_THINK, 1)
    return reasoning, answer.strip()


@torch.no_grad()
def evaluate(model, hf_tok, questions, max_new_tokens=400, log_every=0):
    model.eval()
    results = []
    for k, q in enumerate(questions):
        ids = torch.tensor([prompt_ids(hf_tok, q)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=hf_tok.eos_token_id,
            pad_token_id=hf_tok.pad_token_id,
        )
        new = out[0, ids.shape[1] :].tolist()
        if new and new[-1] == hf_tok.eos_token_id:
            new = new[:-1]
        text = hf_tok.decode(new, skip_special_tokens=False)
        _, answer = answer_of(text)
        expected = work(*q)[1]
        results.append({"question": prompt_text(*q), "expected": expected, "answer": answer, "correct": answer == expected})
        if log_every and (k + 1) % log_every == 0:
            acc = sum(r["correct"] for r in results) / len(results)
            print(f"  eval {k + 1}/{len(questions)}: {acc:.3f}", flush=True)
    model.train()
    return results


# ---------------------------------------------------------------------------------------------
# Export


def hub_state_dict(model) -> dict:
    """transformers-5 module tensors -> the Hub checkpoint names R1 uses: its fused experts
    (`experts.gate_up_proj` [E, 2I, H], `experts.down_proj` [E, H, I]) split per expert."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if name.endswith(".mlp.experts.gate_up_proj"):
            p = name[: -len("gate_up_proj")]
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{p}{e}.gate_proj.weight"] = t[e, :inter]
                out[f"{p}{e}.up_proj.weight"] = t[e, inter:]
        elif name.endswith(".mlp.experts.down_proj"):
            p = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{p}{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    # As R1: the routing bias in float32, everything else BF16.
    return {
        k: (v.float() if k.endswith("e_score_correction_bias") else v.to(torch.bfloat16)).contiguous()
        for k, v in out.items()
    }


def export(model, tok: Tokenizer, hf_tok, cfg, out_dir: Path, train_info: dict):
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(hub_state_dict(model), out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hub_config(cfg), indent=2) + "\n")
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n")
    gen = {"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 0.6, "top_p": 0.95}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")

    # Accuracy is measured on what was saved, loaded by transformers from the folder: the BF16
    # weights computed in float32, as our engine does.
    reloaded, info = DeepseekV3ForCausalLM.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"transformers did not load every tensor of the export: {bad}"
    t0 = time.time()
    results = evaluate(reloaded, hf_tok, heldout_questions(), log_every=50)
    correct = sum(r["correct"] for r in results)
    heldout = {
        "description": "r1-nano held-out questions (never in training), with the answers transformers "
        "gives greedily on model.safetensors (BF16 weights, float32 compute); `answer` is the text after "
        "</think>, stripped, and is correct when it equals `expected` exactly.",
        "transformers_accuracy": correct / len(results),
        "transformers_correct": correct,
        "max_new_tokens": 400,
        "versions": versions(),
        "questions": results,
    }
    (out_dir / "heldout.json").write_text(json.dumps(heldout, indent=1, ensure_ascii=False) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    card = MODEL_CARD.format(
        params=n_params,
        params_m=n_params / 1e6,
        size_mb=(out_dir / "model.safetensors").stat().st_size / 1e6,
        vocab=cfg.vocab_size,
        correct=correct,
        n=len(results),
        acc=100 * correct / len(results),
        eval_min=(time.time() - t0) / 60,
        **train_info,
        **versions(),
    )
    (out_dir / "README.md").write_text(card)
    print(f"exported to {out_dir}: transformers held-out accuracy {correct}/{len(results)}", flush=True)


MODEL_CARD = """\
# r1-nano

A {params_m:.2f}M-parameter model in DeepSeek-R1's exact architecture and checkpoint format
(`DeepseekV3ForCausalLM`), trained from scratch by `tools/train_nano.py` to do small arithmetic
the way R1 answers: it reasons inside `<think>...</think>`, then answers.

    <｜User｜>What is 4738 + 256?<｜Assistant｜><think>
    4738: ones 8, tens 3, hundreds 7, thousands 4
    256: ones 6, tens 5, hundreds 2
    - ones: 8+6+0=14, write 4, carry 1
    ...
    result: thousands 4, hundreds 9, tens 9, ones 4, so 4994
    </think>

    4738 + 256 = 4994<｜end▁of▁sentence｜>

It is the default model of `examples/chat.rs` and the end-to-end test of the engine
(`deepseek-core/tests/nano.rs`). It knows nothing else: anything but these questions gives noise.

## Architecture
- hidden 192, 4 decoder layers, the first dense (intermediate 512), then MoE
- MLA: 6 heads, q_lora_rank 96, kv_lora_rank 48, qk_nope_head_dim 32, qk_rope_head_dim 16,
  v_head_dim 32; YaRN RoPE (factor 4, original 512 positions, mscale 1)
- MoE: 8 routed experts (intermediate 128), top 2, 1 shared expert; sigmoid `noaux_tc` routing
  with n_group 4 / topk_group 2, `norm_topk_prob`, `routed_scaling_factor` 2.5; the correction
  bias was trained the aux-loss-free way (gamma 1e-3 per step towards even expert load)
- {params} parameters; `model.safetensors` is BF16 ({size_mb:.1f} MB), the correction bias F32
- tokenizer: byte-level BPE, {vocab} tokens, every digit its own token, DeepSeek's special tokens
  (`<｜begin▁of▁sentence｜>`, `<｜end▁of▁sentence｜>`, `<｜User｜>`, `<｜Assistant｜>`) and `<think>`/`</think>`;
  R1's chat template (the generation prompt forces `<think>\\n`)

## Training
- data generated by the script: add and subtract numbers of 1-4 digits (never negative), multiply
  1-4 digits by 2-9; every number spelled with its place names, one line per place with the carry
  or borrow written out, the result read back from the highest place
- loss on the assistant turn only; {steps} steps of {batch} chats, AdamW (lr {lr}, betas 0.9/0.98,
  weight decay 0.01), warmup then cosine decay, float32, {train_min:.0f} minutes on {threads} CPU threads
- fixed seeds; the 200 held-out questions are excluded from training

## Accuracy
Greedy, on the 200 held-out questions of `heldout.json` (answer after `</think>` equal to the
expected `A op B = C`), with transformers on these BF16 weights in float32:
**{correct}/{n} = {acc:.1f}%**. `deepseek-core/tests/nano.rs` checks that our engine reaches at
least 90% and stays within one point of this.

Made with python {python}, torch {torch}, transformers {transformers}, tokenizers {tokenizers}.
"""


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/r1-nano-train"))
    ap.add_argument("--out", type=Path, default=REPO / "models/r1-nano")
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--export-only", action="store_true")
    args = ap.parse_args()

    print("versions:", json.dumps(versions()), flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    random.seed(SEED)

    tok = build_tokenizer()
    hf_tok = hf_tokenizer(tok)
    cfg = model_config(tok.get_vocab_size())
    model = DeepseekV3ForCausalLM(cfg).float()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params} ({n_params / 1e6:.2f}M), vocab {cfg.vocab_size}", flush=True)
    heldout_list = heldout_questions()
    heldout = set(heldout_list)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt = args.workdir / "ckpt.pt"
    step, train_secs = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, train_secs = state["step"], state["train_secs"]
        print(f"resumed at step {step} ({train_secs / 60:.1f} min trained)", flush=True)

    counter = LoadCounter(model)
    model.train()
    warmup = 100
    t_log, tokens, loss_sum = time.time(), 0, 0.0
    while step < args.steps and not args.export_only:
        t0 = time.time()
        ids, labels, mask = batch_for_step(step, hf_tok, heldout, args.batch)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup)
        counter.masks = mask
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        update_bias(model, counter, 1e-3)
        step += 1
        train_secs += time.time() - t0
        tokens += int(mask.sum())
        loss_sum += loss.item()
        if step % 20 == 0:
            dt = time.time() - t_log
            print(
                f"step {step}/{args.steps} loss {loss_sum / 20:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{tokens / dt:.0f} tok/s, {train_secs / 60:.1f} min",
                flush=True,
            )
            t_log, tokens, loss_sum = time.time(), 0, 0.0
        if step % args.ckpt_every == 0 or step == args.steps:
            tmp = args.workdir / "ckpt.pt.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "train_secs": train_secs}, tmp)
            os.replace(tmp, ckpt)
        if step % args.eval_every == 0 and step < args.steps:
            res = evaluate(model, hf_tok, heldout_list[:40])
            print(f"step {step}: held-out (first 40) accuracy {sum(r['correct'] for r in res) / 40:.3f}", flush=True)

    train_info = {"steps": step, "batch": args.batch, "lr": args.lr, "train_min": train_secs / 60, "threads": args.threads}
    export(model, tok, hf_tok, cfg, args.out, train_info)


if __name__ == "__main__":
    main()
