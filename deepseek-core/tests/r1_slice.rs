//! The R1 slice (`tools/make_bench_model.py --shape r1-slice`) is R1: its committed config.json
//! parses to DeepSeek-R1's published dimensions (the values in the shared reference notes and deepseek-ai/DeepSeek-R1's
//! config.json), except the three documented slice changes (layers, dense layers, stored
//! experts), so timings on the slice are R1's per layer.

use deepseek_core::config::{ModelType, ScoringFunc, TopkMethod};
use deepseek_core::Config;

#[test]
fn r1_slice_config_has_r1_dimensions() {
    let c = Config::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/r1-slice/config.json"
    ))
    .unwrap();
    assert_eq!(c.model_type, ModelType::DeepseekV3);
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (129280, 7168, 18432)
    );
    assert_eq!((c.num_attention_heads, c.rms_norm_eps), (128, 1e-6));
    assert!(!c.tie_word_embeddings);
    let q = c.quantization.expect("FP8 quantization_config");
    assert_eq!(q.weight_block_size, [128, 128]);
    let d = c.deepseek().expect("a DeepSeek config");
    assert_eq!(d.q_lora_rank, Some(1536));
    assert_eq!(
        (
            d.kv_lora_rank,
            d.qk_nope_head_dim,
            d.qk_rope_head_dim,
            d.v_head_dim
        ),
        (512, 128, 64, 128)
    );
    let y = d.rope_scaling.as_ref().expect("YaRN");
    assert_eq!(
        (
            y.factor,
            y.original_max_position_embeddings,
            y.beta_fast,
            y.beta_slow
        ),
        (40.0, 4096, 32.0, 1.0)
    );
    assert_eq!((y.mscale, y.mscale_all_dim), (1.0, 1.0));
    let m = d.moe.as_ref().expect("MoE");
    assert_eq!(
        (
            m.moe_intermediate_size,
            m.num_experts_per_tok,
            m.n_shared_experts
        ),
        (2048, 8, 1)
    );
    assert_eq!((m.n_group, m.topk_group), (8, 4));
    assert_eq!(m.topk_method, TopkMethod::NoauxTc);
    assert_eq!(m.scoring_func, ScoringFunc::Sigmoid);
    assert!(m.norm_topk_prob);
    assert_eq!(m.routed_scaling_factor, 2.5);
    // The slice's changes: 3 layers (1 dense + 2 MoE) of R1's 61 (3 dense), 32 stored routed
    // experts of 256 (still 8 groups of 4, top-8).
    assert_eq!((c.num_hidden_layers, d.first_k_dense_replace), (3, 1));
    assert_eq!(m.n_routed_experts, 32);
    assert_eq!(m.n_routed_experts % m.n_group, 0);
    assert!(m.n_routed_experts / m.n_group * m.topk_group >= m.num_experts_per_tok);
}
