"""Numerical parity with transformers' DiffusionGemmaForBlockDiffusion, and checkpoint interop both ways."""

import shutil
from dataclasses import replace

import pytest
import torch
from hf_reference import TINY_TEXT, hf_model

from diffsolve.core import ModelConfig, SamplingConfig, generate, load_model, new_model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    hf = hf_model(seed=0)
    path = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(path)
    return hf, load_model(path)


def _hf_logits(hf, prompt, canvases, sc=None):
    """Logits of each canvas; canvas i attends to the prompt and the canvases before it (block-autoregressive)."""
    out, pkv = [], None
    context = prompt
    with torch.no_grad():
        for i, canvas in enumerate(canvases):
            res = hf(input_ids=context, past_key_values=pkv, decoder_input_ids=canvas,
                     self_conditioning_logits=sc if i == 0 else None)
            pkv, context = res.past_key_values, canvas
            out.append(res.logits)
    return out


def test_logits_match_transformers_fp32(reference):
    hf, ours = reference
    torch.manual_seed(1)
    b, window = 3, TINY_TEXT["sliding_window"]
    prompt = torch.randint(0, 96, (b, window + 5))  # longer than the sliding window
    c1, c2 = torch.randint(0, 96, (2, b, 10))
    sc = 3 * torch.randn(b, 10, 96)
    ref_first, ref_second = _hf_logits(hf, prompt, [c1, c2])
    (ref_sc,) = _hf_logits(hf, prompt, [c1], sc=sc)
    with torch.no_grad():
        cache = ours.encode(prompt)
        first = ours.denoise(c1, cache)
        with_sc = ours.denoise(c1, cache, sc)
        second = ours.denoise(c2, ours.encode(c1, cache))
    assert first.dtype == torch.float32 and first.shape == (b, 10, 96)
    for mine, ref in ((first, ref_first), (with_sc, ref_sc), (second, ref_second)):
        assert (mine - ref).abs().max().item() <= 2e-4
    assert (first - with_sc).abs().max() > 1e-2  # self-conditioning really changes the output
    assert first.abs().max() <= 30.0  # softcapped


def test_both_moe_paths_match_transformers(reference):
    """Few tokens run every expert on every token; many tokens are grouped by expert. Both match."""
    from diffsolve.core.model import DENSE_MOE_LIMIT

    hf, ours = reference
    torch.manual_seed(2)
    prompt = torch.randint(0, 96, (2, 8))
    for b, length in ((2, 10), (8, 64)):
        experts_times_tokens = b * length * TINY_TEXT["num_experts"]
        assert (experts_times_tokens <= DENSE_MOE_LIMIT) == (b == 2)
        canvas = torch.randint(0, 96, (b, length))
        context = prompt.repeat(b // 2, 1)
        (ref,) = _hf_logits(hf, context, [canvas])
        with torch.no_grad():
            mine = ours.denoise(canvas, ours.encode(context))
        assert (mine - ref).abs().max().item() <= 2e-4


def test_compiled_denoiser_matches_eager(tmp_path):
    """`compile_denoiser` (torch.compile) gives the eager logits, across batch sizes (recompiles)."""
    hf = hf_model(seed=3)
    hf.save_pretrained(tmp_path)
    eager, compiled = load_model(tmp_path), load_model(tmp_path)
    compiled.compile_denoiser()
    torch.manual_seed(3)
    with torch.no_grad():
        for b in (2, 3):
            prompt, canvas = torch.randint(0, 96, (b, 12)), torch.randint(0, 96, (b, 10))
            sc = torch.randn(b, 10, 96)
            want = eager.denoise(canvas, eager.encode(prompt), sc)
            got = compiled.denoise(canvas, compiled.encode(prompt), sc)
            assert (got - want).abs().max().item() <= 2e-4
    # With a C++ compiler inductor compiles and the wrapper stays; without one it falls back to eager (warned).
    has_compiler = any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))
    assert hasattr(compiled.denoise, "__self__") != has_compiler


def test_layer_scalars_are_per_side(reference):
    _, ours = reference
    enc = torch.stack([layer.encoder_scalar for layer in ours.layers])
    dec = torch.stack([layer.decoder_scalar for layer in ours.layers])
    assert not torch.allclose(enc, dec)


def test_bf16_argmax_agrees_with_transformers(tmp_path):
    """bf16 rounding alone moves argmaxes of a random model; we must agree with transformers' bf16 model and be
    at least as close to the fp32 result as it is."""
    hf = hf_model(seed=4)
    hf.save_pretrained(tmp_path)
    exact = load_model(tmp_path)
    hf = hf.to(torch.bfloat16)
    ours = load_model(tmp_path, dtype=torch.bfloat16)
    assert ours.embed_tokens.weight.dtype == torch.bfloat16
    torch.manual_seed(2)
    prompt, canvas = torch.randint(0, 96, (16, 9)), torch.randint(0, 96, (16, 10))
    (ref,) = _hf_logits(hf, prompt, [canvas])
    with torch.no_grad():
        mine = ours.denoise(canvas, ours.encode(prompt))
        fp32 = exact.denoise(canvas, exact.encode(prompt)).argmax(-1)
    assert mine.dtype == torch.float32

    def agree(a, b):
        return (a == b).float().mean().item()

    assert agree(mine.argmax(-1), ref.argmax(-1)) >= 0.9
    assert agree(mine.argmax(-1), fp32) >= agree(ref.argmax(-1), fp32) - 0.05


def test_our_checkpoint_loads_in_transformers(tmp_path):
    from transformers import DiffusionGemmaForBlockDiffusion

    config = ModelConfig.from_hf_dict({"model_type": "diffusion_gemma", "canvas_length": 10,
                                       "text_config": dict(TINY_TEXT)})
    ours = new_model(config, seed=3)
    with torch.no_grad():
        for p in ours.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
        for i, layer in enumerate(ours.layers):
            layer.encoder_scalar.fill_(0.6 + 0.1 * i)
            layer.decoder_scalar.fill_(1.4 - 0.1 * i)
    ours.save_pretrained(tmp_path)
    hf = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp_path).eval()
    assert hf.generation_config.max_denoising_steps == 48
    prompt, c1, c2 = torch.randint(0, 96, (2, 11)), torch.randint(0, 96, (2, 10)), torch.randint(0, 96, (2, 10))
    ref_first, ref_second = _hf_logits(hf, prompt, [c1, c2])
    with torch.no_grad():
        cache = ours.encode(prompt)
        assert (ours.denoise(c1, cache) - ref_first).abs().max() <= 2e-4
        assert (ours.denoise(c2, ours.encode(c1, cache)) - ref_second).abs().max() <= 2e-4


@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=20, max_denoising_steps=12, eos_token_id=1, pad_token_id=0),
    dict(max_new_tokens=10, max_denoising_steps=16, t_min=0.05, t_max=0.1, entropy_bound=2.0,
         confidence_threshold=0.5),
    dict(max_denoising_steps=2, t_min=0.0),  # no length set anywhere: 256 tokens (26 canvases of 10) in both
    # our count of repeats stops where their history of canvases does (rows stop after 37 and 43 of 48 passes;
    # 33 and 41 at the threshold of 1)
    dict(max_new_tokens=20, max_denoising_steps=24, t_min=0.0, t_max=0.1, entropy_bound=20.0,
         confidence_threshold=5.0, stability_threshold=3),
])
def test_generate_matches_transformers(tmp_path, kwargs):
    """Same seed, same draws: identical sequences and tokens-per-forward, EOS/pad and two blocks included."""
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    # A well-conditioned model: chaotic random weights amplify 1e-6 float differences across steps.
    hf = hf_model(seed=5, weight_std=0.05)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    prompt = torch.randint(3, 96, (3, 7), generator=torch.Generator().manual_seed(0))
    config = SamplingConfig(**kwargs)
    hf_kwargs = {k: v for k, v in kwargs.items() if k != "entropy_bound"}
    torch.manual_seed(123)
    ref = hf.generate(prompt, sampler_config=EntropyBoundSamplerConfig(entropy_bound=config.entropy_bound),
                      **hf_kwargs)
    torch.manual_seed(123)
    out = generate(ours, prompt, config)
    assert torch.equal(out.sequences, ref.sequences)
    assert torch.allclose(out.tokens_per_forward.float(), ref.tokens_per_forward.float())


@pytest.mark.parametrize("task", ["sorting", "sudoku", "molecules", "graphs"])
def test_shipped_checkpoints_load_in_transformers(task):
    from transformers import DiffusionGemmaForBlockDiffusion

    from diffsolve.solvers.checkpoints import default_checkpoint

    path = default_checkpoint(task)
    ours = load_model(path)
    hf = DiffusionGemmaForBlockDiffusion.from_pretrained(path).eval()
    vocab, length = ours.config.vocab_size, ours.config.canvas_length
    g = torch.Generator().manual_seed(0)
    prompt, canvas = torch.randint(3, vocab, (2, 9), generator=g), torch.randint(3, vocab, (2, length), generator=g)
    (ref,) = _hf_logits(hf, prompt, [canvas])
    with torch.no_grad():
        assert (ours.denoise(canvas, ours.encode(prompt)) - ref).abs().max() <= 2e-4
    ours_sampling, theirs = ours.generation_config, hf.generation_config  # both read the shipped sampler settings
    assert ours_sampling.max_denoising_steps == theirs.max_denoising_steps
    assert ours_sampling.entropy_bound == theirs.sampler_config.entropy_bound
    assert ours_sampling.max_new_tokens == theirs.max_new_tokens == length  # one canvas in both engines
    from transformers import AutoTokenizer

    words = " ".join(ours.tokenizer.id_to_token(i) for i in range(ours.config.vocab_size)
                     if ours.tokenizer.id_to_token(i) is not None)
    tokenizer = AutoTokenizer.from_pretrained(path)  # without tokenizer_config.json: a GemmaTokenizer, spaces <unk>
    assert tokenizer(words, add_special_tokens=False)["input_ids"] == ours.tokenizer.encode(words).ids
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)


def test_a_saved_sampler_config_loads_in_transformers_as_written(tmp_path):
    """Whole-number floats are written as floats (transformers refuses `"entropy_bound": 1`), and the length
    is one canvas unless the config names another."""
    from transformers import DiffusionGemmaForBlockDiffusion

    ours = new_model(ModelConfig.from_hf_dict({"model_type": "diffusion_gemma", "canvas_length": 10,
                                               "text_config": dict(TINY_TEXT)}), seed=0)
    ours.generation_config = SamplingConfig(entropy_bound=1, t_min=0, t_max=2, confidence_threshold=1)
    ours.save_pretrained(tmp_path)
    theirs = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp_path).generation_config
    written = (theirs.sampler_config.entropy_bound, theirs.t_min, theirs.t_max, theirs.max_new_tokens)
    assert written == (1.0, 0.0, 2.0, 10)
    assert load_model(tmp_path).generation_config == replace(ours.generation_config, max_new_tokens=10)


def test_deepened_model_computes_the_same_and_loads_in_transformers(reference, tmp_path):
    """`deepen` interleaves identity copies of each layer: the same logits as the model it grew from, in our
    engine and in transformers, which reads the repeated layer kinds and per-layer geometry from config.json."""
    from transformers import DiffusionGemmaForBlockDiffusion

    from diffsolve.core.training import deepen

    hf, ours = reference
    deeper = deepen(ours, 3)
    assert deeper.config.num_layers == 3 * ours.config.num_layers
    assert deeper.config.layer_types == [kind for kind in ours.config.layer_types for _ in range(3)]
    deeper.save_pretrained(str(tmp_path))
    hf_deeper = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp_path).eval()
    torch.manual_seed(5)
    prompt, canvas = torch.randint(0, 96, (2, 9)), torch.randint(0, 96, (2, 10))
    (want,) = _hf_logits(hf, prompt, [canvas])
    (theirs,) = _hf_logits(hf_deeper, prompt, [canvas])
    with torch.no_grad():
        mine = deeper.denoise(canvas, deeper.encode(prompt))
    assert (theirs - want).abs().max().item() <= 2e-4
    assert (mine - want).abs().max().item() <= 2e-4


def test_proportional_rope_factor_matches_transformers(tmp_path):
    """A rope `factor` divides proportional RoPE's frequencies (the released 26B sets none; a config may)."""
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0, "factor": 8.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 1e6,
                               "factor": 4.0}}
    hf = hf_model(seed=3, rope_parameters=rope)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    torch.manual_seed(4)
    prompt, canvas = torch.randint(0, 96, (2, 40)), torch.randint(0, 96, (2, 10))
    (ref,) = _hf_logits(hf, prompt, [canvas])
    with torch.no_grad():
        mine = ours.denoise(canvas, ours.encode(prompt))
    assert (mine - ref).abs().max().item() <= 2e-4
    unscaled = {kind: {k: v for k, v in spec.items() if k != "factor"} for kind, spec in rope.items()}
    other = hf_model(seed=3, rope_parameters=unscaled)
    (ref_unscaled,) = _hf_logits(other, prompt, [canvas])
    assert (ref - ref_unscaled).abs().max().item() > 1e-3  # the factor matters on these positions


def test_repeating_key_value_heads_computes_the_same_attention():
    """The path CUDA takes with a mask or head_dim > 256 (heads repeated for the fused kernels) equals grouped
    attention, each key/value head serving its consecutive query heads."""
    from diffsolve.core.model import attend

    g = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(2, 8, 5, 16, generator=g), torch.randn(2, 2, 7, 16, generator=g), torch.randn(2, 2, 7, 16,
                                                                                                       generator=g)
    mask = torch.rand(2, 1, 5, 7, generator=g) > 0.3
    mask[..., 0] = True
    grouped = attend(q, k, v, mask)
    assert torch.allclose(attend(q, k, v, mask, expand_kv_heads=True), grouped, atol=1e-6)
    by_hand = torch.softmax((q @ k.repeat_interleave(4, 1).transpose(-1, -2)).masked_fill(~mask, -torch.inf), -1)
    assert torch.allclose(by_hand @ v.repeat_interleave(4, 1), grouped, atol=1e-5)


def test_many_tokens_routed_to_several_experts_add_up_as_transformers_loop_over_experts(monkeypatch):
    """The grouped path (1,000 tokens, top 4 of 16 and top 8 of 128 as the 26B routes, float32 and bfloat16) gives
    the bits of transformers' formulation, a loop over experts that index_add_s each one's tokens (written out
    here), without calling index_add_ itself: on CUDA its atomics add in any order, so a seeded run could change."""
    from diffsolve.core.model import DENSE_MOE_LIMIT, Experts

    def loop_over_experts(experts, x, weights, index):
        out = torch.zeros_like(x)
        for e in range(experts.gate_up_proj.shape[0]):
            token, slot = torch.nonzero(index == e, as_tuple=True)
            gate, up = (x[token] @ experts.gate_up_proj[e].T).chunk(2, -1)
            y = (experts.act(gate) * up) @ experts.down_proj[e].T
            out.index_add_(0, token, (y * weights[token, slot, None]).to(x.dtype))
        return out

    for num_experts, k, dtype in ((16, 4, torch.float32), (128, 8, torch.float32), (16, 4, torch.bfloat16)):
        cfg = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=8, num_layers=1, num_heads=1,
                          num_kv_heads=1, head_dim=8, num_experts=num_experts, top_k_experts=k,
                          moe_intermediate_size=16, canvas_length=4)
        experts, g = Experts(cfg), torch.Generator().manual_seed(k)
        with torch.no_grad():
            for p in experts.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            experts = experts.to(dtype)
            x = torch.randn(1000, 32, generator=g).to(dtype)
            index = torch.rand(1000, num_experts, generator=g).argsort(-1)[:, :k]
            weights = torch.rand(1000, k, generator=g)
            assert 1000 * num_experts > DENSE_MOE_LIMIT  # the grouped path
            expected = loop_over_experts(experts, x, weights, index)
            with monkeypatch.context() as patch:
                patch.setattr(torch.Tensor, "index_add_", lambda *args: pytest.fail("index_add_ in the sum"))
                assert torch.equal(experts(x, weights, index), expected), (num_experts, k, dtype)


def test_a_few_tokens_of_many_experts_compute_what_every_expert_would(monkeypatch):
    """One token routed to 2 of 32 experts (as in autoregressive decoding with the 26B's 128) runs only those two
    (the dense form, which reads every expert, is not called); the result is the dense form's."""
    from diffsolve.core.model import Experts

    cfg = ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=1, num_kv_heads=1,
                      head_dim=8, num_experts=32, top_k_experts=2, moe_intermediate_size=4, canvas_length=4)
    experts = Experts(cfg)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for tokens in (1, 3):
            x = torch.randn(tokens, 8, generator=g)
            index = torch.stack([torch.randperm(32, generator=g)[:2] for _ in range(tokens)])
            weights = torch.rand(tokens, 2, generator=g)
            dense = experts._dense(x, weights, index)
            with monkeypatch.context() as patch:
                patch.setattr(experts, "_dense", lambda *args: pytest.fail("every expert ran for a few tokens"))
                assert torch.allclose(experts(x, weights, index), dense, atol=1e-5)
