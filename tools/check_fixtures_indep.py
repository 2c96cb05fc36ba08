#!/usr/bin/env python3
"""Independent plain-torch re-implementation of DeepSeek V2/V3 (no transformers), used to
cross-check the golden fixtures written by tools/make_fixtures.py and the semantics the Rust
port follows: interleaved-pair RoPE on the rope parts only, YaRN inv_freq ramp, softmax scale
(nope+rope)^-0.5 * mscale^2, q_a/kv_a norms with eps 1e-6, V3 sigmoid+bias group routing (group
score = sum of top-2, weights from the unbiased sigmoid, normalised, * routed_scaling_factor), V2
softmax greedy / group_limited_greedy (group score = max, weights = p * routed_scaling_factor,
no renormalisation), MoE output = routed + shared, hidden_states[-1] after the final norm.
FP8 weights are dequantised as fp8 * weight_scale_inv[i//128, j//128].

Run by hand: /path/to/venv/bin/python tools/check_fixtures_indep.py
Expected: logits max |diff| ~1e-5, hidden max |diff| ~1e-6 for every fixture.
"""
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
torch.set_num_threads(1)
F = str(Path(__file__).resolve().parent.parent / 'deepseek-core/tests/fixtures') + '/'
def load(name):
    cfg = json.load(open(F+name+'/config.json'))
    sd = load_file(F+name+'/model.safetensors')
    w = {}
    for k,v in sd.items():
        if k.endswith('_scale_inv'): continue
        if v.dtype == torch.float8_e4m3fn:
            s = sd[k+'_scale_inv'].repeat_interleave(128,0).repeat_interleave(128,1)[:v.shape[0],:v.shape[1]]
            w[k] = v.float()*s
        else: w[k] = v.float()
    return cfg, w
def rms(x, g, eps): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)+eps) * g
def run(cfg, w, ids):
    H=cfg['hidden_size']; nh=cfg['num_attention_heads']; nope=cfg['qk_nope_head_dim']; d=cfg['qk_rope_head_dim']; vd=cfg['v_head_dim']; kvl=cfg['kv_lora_rank']
    T=len(ids); base=cfg['rope_theta']; rs=cfg.get('rope_scaling')
    inv = 1.0/(base**(torch.arange(0,d,2).float()/d)); scale=(nope+d)**-0.5
    if rs:
        c=lambda r: d*math.log(rs['original_max_position_embeddings']/(r*2*math.pi))/(2*math.log(base))
        lo=max(math.floor(c(rs['beta_fast'])),0); hi=min(math.ceil(c(rs['beta_slow'])),d-1)
        ramp=((torch.arange(d//2).float()-lo)/(hi-lo)).clamp(0,1)
        inv = inv/rs['factor']*ramp + inv*(1-ramp)
        m=0.1*rs['mscale_all_dim']*math.log(rs['factor'])+1; scale*=m*m
    ang = torch.arange(T).float()[:,None]*inv[None]   # [T, d/2]
    def rope(x):  # x [..., T, d], interleaved pairs
        a,b = x[...,0::2], x[...,1::2]; c,s = ang.cos(), ang.sin()
        out = torch.empty_like(x); out[...,0::2]=a*c-b*s; out[...,1::2]=b*c+a*s; return out
    x = w['model.embed_tokens.weight'][ids]; hs=[x]
    v3 = cfg['model_type']=='deepseek_v3'
    for l in range(cfg['num_hidden_layers']):
        p=f'model.layers.{l}.'; a=p+'self_attn.'
        h = rms(x, w[p+'input_layernorm.weight'], cfg['rms_norm_eps'])
        if cfg['q_lora_rank'] is None: q = h@w[a+'q_proj.weight'].T
        else: q = rms(h@w[a+'q_a_proj.weight'].T, w[a+'q_a_layernorm.weight'], 1e-6) @ w[a+'q_b_proj.weight'].T
        q = q.view(T, nh, nope+d).transpose(0,1)
        kv = h@w[a+'kv_a_proj_with_mqa.weight'].T
        lat, kpe = kv[:, :kvl], kv[:, kvl:]
        lat = rms(lat, w[a+'kv_a_layernorm.weight'], 1e-6)
        kvb = (lat@w[a+'kv_b_proj.weight'].T).view(T, nh, nope+vd).transpose(0,1)
        kn, v = kvb[..., :nope], kvb[..., nope:]
        qn, qp = q[..., :nope], rope(q[..., nope:]); kp = rope(kpe)[None].expand(nh,-1,-1)
        sc = (qn@kn.transpose(1,2) + qp@kp.transpose(1,2))*scale
        sc = sc + torch.triu(torch.full((T,T), float('-inf')), 1)
        o = (sc.softmax(-1)@v).transpose(0,1).reshape(T, nh*vd) @ w[a+'o_proj.weight'].T
        x = x + o
        h = rms(x, w[p+'post_attention_layernorm.weight'], cfg['rms_norm_eps'])
        mlp = lambda q, h: (torch.nn.functional.silu(h@w[q+'gate_proj.weight'].T)*(h@w[q+'up_proj.weight'].T))@w[q+'down_proj.weight'].T
        if l < cfg['first_k_dense_replace']: x = x + mlp(p+'mlp.', h); hs.append(x); continue
        E=cfg['n_routed_experts']; k=cfg['num_experts_per_tok']; ng=cfg['n_group'] or 1; tg=cfg['topk_group'] or 1
        lg = h@w[p+'mlp.gate.weight'].T
        if v3:
            s = lg.sigmoid(); c = s + w[p+'mlp.gate.e_score_correction_bias']
            gsc = c.view(T, ng, -1).topk(2,-1).values.sum(-1)
            gm = torch.zeros(T, ng).scatter_(1, gsc.topk(tg,-1).indices, 1).bool()
            c = c.masked_fill(~gm.repeat_interleave(E//ng, 1), float('-inf'))
            idx = c.topk(k,-1).indices; wt = s.gather(1, idx)
            if cfg['norm_topk_prob']: wt = wt/(wt.sum(-1,keepdim=True)+1e-20)
        else:
            pr = lg.softmax(-1)
            if cfg['topk_method']=='group_limited_greedy':
                gsc = pr.view(T, ng, -1).max(-1).values
                gm = torch.zeros(T, ng).scatter_(1, gsc.topk(tg,-1).indices, 1).bool()
                pr2 = pr.masked_fill(~gm.repeat_interleave(E//ng, 1), 0.0)
            else: pr2 = pr
            idx = pr2.topk(k,-1).indices; wt = pr.gather(1, idx)
        wt = wt*cfg['routed_scaling_factor']
        y = mlp(p+'mlp.shared_experts.', h)
        for t in range(T):
            for j in range(k): y[t] += wt[t,j]*mlp(p+f'mlp.experts.{int(idx[t,j])}.', h[t:t+1])[0]
        x = x + y; hs.append(x)
    x = rms(x, w['model.norm.weight'], cfg['rms_norm_eps']); hs[-1]=x
    return x@w['lm_head.weight'].T, torch.stack(hs)
for name in ['v3_tiny','v2_lite_tiny','v2_group_tiny','v3_fp8']:  # v3_sharded_bf16: same code as v3_tiny
    cfg, w = load(name); g = load_file(F+name+'/golden.safetensors')
    ids = torch.cat([g['input_ids'], g['greedy_ids']])
    lg, hs = run(cfg, w, ids)
    print(name, 'logits maxdiff %.2e'%(lg-g['logits']).abs().max().item(), 'hidden maxdiff %.2e'%(hs-g['hidden_states']).abs().max().item())
