"""Sampler invariants, constraint hooks, block-autoregressive generation and the AR baseline."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffsolve.constraints import ConstraintModel
from diffsolve.core import (
    Guidance,
    ModelConfig,
    SamplingConfig,
    generate,
    generate_autoregressive,
    new_model,
    released_config,
)
from diffsolve.core.sampler import _StableAndConfident, entropy_bound_accept, token_entropy

VOCAB, LENGTH = 20, 8


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=16, num_experts=4, top_k_experts=2, moe_intermediate_size=16,
                      layer_types=["sliding_attention", "full_attention"], sliding_window=5, canvas_length=LENGTH)
    model = new_model(cfg, seed=0).eval()
    model.generation_config = AS_SAVED  # as save_pretrained writes it: one canvas
    return model


AS_SAVED = SamplingConfig(max_new_tokens=LENGTH)


def prompt(batch=3, length=6, seed=0):
    return torch.randint(4, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 5), min_size=1, max_size=30), st.floats(0.01, 3))
def test_entropy_bound_accepts_the_largest_valid_lowest_entropy_set(entropies, bound):
    e = torch.tensor([entropies])
    accepted = entropy_bound_accept(e, bound)[0]
    chosen = e[0][accepted]
    assert accepted.any()  # the lowest-entropy token is always accepted
    assert chosen.sum() - chosen.max() <= bound + 1e-5
    if (~accepted).any():
        assert e[0][~accepted].min() >= chosen.max()  # a lowest-entropy prefix...
        # ...and maximal: with the next token (the new max) the sum of the others is chosen.sum()
        assert chosen.sum() > bound - 1e-5


def test_token_entropy_matches_torch_categorical():
    logits = torch.randn(4, 7, 11) * 3
    logits[0, 0, :5] = float("-inf")
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(token_entropy(logits), expected, atol=1e-6)


def test_same_seed_same_output_and_different_seed_differs(model):
    run = lambda seed: generate(model, prompt(), generator=torch.Generator().manual_seed(seed)).sequences
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_kept_tokens_stay_settled_from_pass_to_pass_without_guidance(model):
    seen = []

    def check(info):
        if seen:
            canvas, accepted = seen[-1]
            assert info.accepted[accepted].all() and torch.equal(info.canvas[accepted], canvas[accepted])
        seen.append((info.canvas.clone(), info.accepted.clone()))

    config = SamplingConfig(max_denoising_steps=8, keep_accepted=True, stability_threshold=None, max_new_tokens=LENGTH)
    reprs = []
    generate(model, prompt(2), config, generator=torch.Generator().manual_seed(0),
             callback=lambda info: (check(info), reprs.append(repr(info))))
    assert len(seen) == 8 and seen[0][1].any() and seen[-1][1].sum() > seen[0][1].sum()
    # a printed StepInfo is one line of counts, not its tensors
    accepted = int(seen[-1][1].sum())
    assert reprs[-1].startswith("StepInfo(block=0, step=8, canvases=2, ") and len(reprs[-1]) < 150
    assert f"accepted={accepted}/{2 * LENGTH}" in reprs[-1] and "tensor" not in reprs[-1]


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_pins_never_change_and_masked_tokens_never_appear(model, data):
    batch = 2
    cm = ConstraintModel(LENGTH, VOCAB, batch_size=batch)
    allowed = {}
    for row in range(batch):
        for pos in range(LENGTH):
            tokens = data.draw(st.sets(st.integers(0, VOCAB - 1), min_size=1, max_size=5))
            allowed[row, pos] = tokens
            cm.allow([pos], tokens, row=row)
        pinned = data.draw(st.sets(st.integers(0, LENGTH - 1), max_size=3))
        for pos in pinned:
            token = min(allowed[row, pos])
            cm.pin([pos], [token], row=row)
    # no canvas verifies, and no adaptive stop: the checks below see every one of the six passes
    cm.add_predicate("never", verify=lambda canvas, rows: torch.zeros(canvas.shape[0], dtype=torch.bool))
    guidance = cm.compile()
    pins = guidance.pins
    steps = []

    def check(info):
        steps.append(info.step)
        assert ((pins < 0) | (info.canvas == pins)).all() and ((pins < 0) | (info.argmax == pins)).all()
        for (row, pos), tokens in allowed.items():
            assert info.argmax[row, pos].item() in tokens
            if info.accepted[row, pos]:
                assert info.canvas[row, pos].item() in tokens

    seed = data.draw(st.integers(0, 1000))
    keep = data.draw(st.booleans())
    config = SamplingConfig(max_denoising_steps=6, keep_accepted=keep, stability_threshold=None, max_new_tokens=LENGTH)
    generate(model, prompt(batch), config, guidance=guidance, generator=torch.Generator().manual_seed(seed),
             callback=check)
    assert steps == [1, 2, 3, 4, 5, 6]


class _PinOnly(Guidance):
    """Pins without any allowed-token mask: the pins must still hold in the output."""

    def pinned(self, batch, device):
        mask = torch.zeros(batch, LENGTH, dtype=torch.bool)
        mask[:, ::2] = True
        return mask, torch.full((batch, LENGTH), 9)


def test_pins_hold_in_the_output_without_masks(model):
    out = generate(model, prompt(), SamplingConfig(max_denoising_steps=4), guidance=_PinOnly(),
                   generator=torch.Generator().manual_seed(0))
    assert out.canvas[:, ::2].eq(9).all()


class _BlameFirst(Guidance):
    def violations(self, canvas, accepted):
        bad = torch.zeros_like(accepted)
        bad[:, 0] = True
        return bad


def test_violations_are_renoised_even_when_accepted(model):
    accepted_first = []
    generate(model, prompt(), SamplingConfig(max_denoising_steps=10, entropy_bound=100.0), guidance=_BlameFirst(),
             generator=torch.Generator().manual_seed(0),
             callback=lambda info: accepted_first.append((info.accepted[:, 0].any().item(),
                                                          info.renoised_by_constraint[:, 0].all().item())))
    # entropy bound 100 accepts everything, yet position 0 is re-noised every pass
    assert accepted_first and all(not acc and blamed for acc, blamed in accepted_first)


class _SolvedAfter(Guidance):
    def __init__(self, calls):
        self.calls = calls

    def verify(self, canvas):
        self.calls -= 1
        return torch.full((canvas.shape[0],), self.calls <= 0)


def test_verifier_stops_early_and_reports_solved(model):
    out = generate(model, prompt(), SamplingConfig(max_denoising_steps=40, stability_threshold=None),
                   guidance=_SolvedAfter(3), generator=torch.Generator().manual_seed(0))
    assert out.forward_passes.tolist() == [3, 3, 3] and out.solved.all()
    plain = generate(model, prompt(), SamplingConfig(max_denoising_steps=40, stability_threshold=None),
                     generator=torch.Generator().manual_seed(0))
    assert plain.forward_passes.tolist() == [40, 40, 40] and not plain.solved.any()


def test_block_autoregressive_generation_commits_canvases(model):
    config = SamplingConfig(max_denoising_steps=5, max_new_tokens=3 * LENGTH)
    out = generate(model, prompt(), config, generator=torch.Generator().manual_seed(0))
    assert out.sequences.shape == (3, 6 + 3 * LENGTH)
    assert out.cache.length == 6 + 2 * LENGTH  # the last canvas is never encoded
    assert torch.equal(out.canvas, out.sequences[:, -LENGTH:])


def test_eos_pads_the_rest_and_stops_rows(model):
    class ForceEos(Guidance):
        def allowed(self, canvas, settled):
            mask = torch.zeros(canvas.shape[0], LENGTH, VOCAB, dtype=torch.bool)
            mask[:, :, 5] = True
            mask[:, 3, :] = False
            mask[:, 3, 1] = True  # EOS at position 3
            return mask

    config = SamplingConfig(max_denoising_steps=3, max_new_tokens=2 * LENGTH, eos_token_id=1, pad_token_id=0)
    out = generate(model, prompt(), config, guidance=ForceEos(), generator=torch.Generator().manual_seed(0))
    assert out.sequences.shape[1] == 6 + LENGTH  # stopped after the first canvas
    assert out.canvas[:, :3].eq(5).all() and out.canvas[:, 3].eq(1).all() and out.canvas[:, 4:].eq(0).all()
    assert out.forward_passes.tolist() == [2, 2, 2]  # fully determined canvas: stable and confident at pass 2
    assert torch.allclose(out.tokens_per_forward, torch.full((3,), 4 / 2))


def test_bias_leans_the_draws_and_allowed_still_rules(model):
    class Lean(Guidance):
        def __init__(self, strength):
            self.strength = strength

        def bias(self, canvas):
            bias = torch.zeros(1, 1, VOCAB)
            bias[..., 7] = self.strength
            return bias

        def allowed(self, canvas, settled):
            mask = torch.ones(1, LENGTH, VOCAB, dtype=torch.bool)
            mask[:, 0, 7] = False  # forbidden at the first position whatever the bias
            return mask

    def share(strength):
        out = generate(model, prompt(), SamplingConfig(max_denoising_steps=4), guidance=Lean(strength),
                       generator=torch.Generator().manual_seed(0))
        return out.canvas[:, 1:].eq(7).float().mean().item(), out.canvas[:, 0].eq(7).any().item()

    assert share(0.0)[0] < 0.3  # the random tiny model rarely picks token 7
    leaned, first = share(30.0)
    assert leaned == 1.0 and not first


def test_a_passed_config_takes_the_checkpoints_eos_and_pad_when_it_sets_none(model):
    """As transformers fills a passed generation config's unset fields from the checkpoint's: SamplingConfig()
    stops and pads at the released model's EOS ids."""
    def run(config):
        return generate(model, prompt(), config, generator=torch.Generator().manual_seed(0)).sequences

    stored = model.generation_config
    try:
        model.generation_config = AS_SAVED
        unpadded = run(SamplingConfig(max_denoising_steps=4))
        eos = list(range(1, VOCAB // 2))  # half the vocabulary: some row is sure to hold one
        model.generation_config = SamplingConfig(eos_token_id=eos, pad_token_id=0, max_denoising_steps=9,
                                                 max_new_tokens=LENGTH)
        filled = run(SamplingConfig(max_denoising_steps=4))
        assert torch.equal(filled, run(SamplingConfig(max_denoising_steps=4, eos_token_id=eos, pad_token_id=0)))
        assert not torch.equal(filled, unpadded) and filled.eq(0).any()
    finally:
        model.generation_config = stored


def test_cache_select_repeats_a_prompt_for_parallel_canvases(model):
    cache = model.encode(prompt(1))
    many = cache.select([0] * 4)
    canvas = torch.randint(0, VOCAB, (4, LENGTH))
    with torch.no_grad():
        one_by_one = torch.cat([model.denoise(canvas[i:i + 1], cache) for i in range(4)])
        assert torch.allclose(model.denoise(canvas, many), one_by_one, atol=1e-5)


def test_padding_tokens_are_ignored(model):
    ids = prompt(2, 9)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :4] = False  # left padding in row 0
    other = ids.clone()
    other[0, :4] = 7  # different pad ids must not matter
    canvas = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        a = model.denoise(canvas, model.encode(ids, attention_mask=mask))
        b = model.denoise(canvas, model.encode(other, attention_mask=mask))
    assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-5)


def test_autoregressive_mode_matches_full_recompute(model):
    ids = prompt(2, 5)
    new = generate_autoregressive(model, ids, max_new_tokens=7)
    with torch.no_grad():
        for i in range(new.shape[1]):
            context = torch.cat((ids, new[:, :i]), dim=1)
            _, logits = model.encode_logits(context)
            assert torch.equal(logits[:, -1].argmax(-1), new[:, i])


def test_a_prompt_of_the_wrong_shape_is_refused_by_name(model):
    with pytest.raises(ValueError, match=r"prompt_ids must be \[batch, length\] .*got shape \[6\]"):
        generate(model, prompt()[0])
    with pytest.raises(ValueError, match=r"prompt_ids must be .*at least one row and one token, got shape \[3, 0\]"):
        generate(model, prompt()[:, :0])
    with pytest.raises(ValueError, match=r"got shape \[0, 6\]"):
        generate(model, prompt()[:0])


@pytest.mark.parametrize("call, error, message", [
    (lambda m, ids, cache: generate(m, ids.float()), TypeError, "prompt_ids must hold integer token ids"),
    (lambda m, ids, cache: generate(m, ids.tolist()), TypeError, "prompt_ids must be a torch tensor"),
    (lambda m, ids, cache: generate(m, ids.tolist(), cache=cache), TypeError, "prompt_ids must be a torch tensor"),
    (lambda m, ids, cache: generate_autoregressive(m, ids.tolist(), 3), TypeError, "prompt_ids must be a torch"),
    (lambda m, ids, cache: generate_autoregressive(m, ids * 0 - 1, 3), ValueError, "prompt_ids holds token id -1"),
    (lambda m, ids, cache: generate(m, ids + m.config.vocab_size), ValueError,
     "prompt_ids holds token id .*outside the vocabulary"),
    (lambda m, ids, cache: generate(m, ids[:1], cache=cache), ValueError, "prompt_ids has 1 rows but the cache "
                                                                          "holds 2"),
    (lambda m, ids, cache: generate(m, ids, {"max_denoising_steps": 2}), TypeError, "config must be a SamplingConfig"),
    (lambda m, ids, cache: generate(m, ids, generator=0), TypeError, "generator must be a torch.Generator"),
    (lambda m, ids, cache: m.encode(ids * 0 - 1), ValueError, "input_ids holds token id -1"),
    (lambda m, ids, cache: m.encode(ids, attention_mask=torch.ones(2, 3)), ValueError,
     r"attention_mask must be \[batch, length\] = \[2, 6\], the shape of the ids it masks"),
    (lambda m, ids, cache: m.denoise(ids[:1], cache), ValueError, "canvas_ids has 1 rows but the cache holds 2"),
    (lambda m, ids, cache: m.denoise(ids, None), TypeError, "cache must be the KVCache that encode returns"),
    (lambda m, ids, cache: m.denoise(ids, cache, self_conditioning_logits=torch.zeros(2, 6, 3)), ValueError,
     "self_conditioning_logits must be"),
])
def test_bad_inputs_to_the_engine_are_named_before_torch_sees_them(model, call, error, message):
    ids = prompt(2, 6)
    with pytest.raises(error, match=message):
        call(model, ids, model.encode(ids))


def test_the_checkpoints_own_settings_are_the_default(model):
    model.generation_config = SamplingConfig(max_denoising_steps=3, stability_threshold=None, max_new_tokens=LENGTH)
    try:
        assert (generate(model, prompt()).forward_passes == 3).all()
        assert released_config(model, t_min=0.2).max_denoising_steps == 3
        assert released_config(model, t_min=0.2).t_min == 0.2
        model.generation_config = None
        assert released_config(model) == SamplingConfig()
        # Neither the call nor the checkpoint sets a length: 256 new tokens, as transformers (32 canvases here)
        out = generate(model, prompt(1), SamplingConfig(max_denoising_steps=1, stability_threshold=None))
        assert out.sequences.shape == (1, 6 + 256) and out.forward_passes.item() == 256 // LENGTH
    finally:
        model.generation_config = AS_SAVED


def test_engine_arguments_are_named_before_any_pass(model):
    changed = SamplingConfig(max_new_tokens=LENGTH)
    changed.max_denoising_steps = 0  # changed after it was made: was 0 passes, the random canvas returned
    cache = model.encode(prompt(2))
    for call, error, message in [
        (lambda: generate(model, prompt(), changed), ValueError, "max_denoising_steps must be at least 1"),
        (lambda: generate(model, prompt(), SamplingConfig(max_new_tokens=LENGTH, pad_token_id=99)), ValueError,
         "pad_token_id 99 is outside the vocabulary of 20 tokens"),  # was named as an input id, later
        (lambda: generate(model, prompt(), callback=5), TypeError, "callback must be a function"),
        (lambda: generate(model, prompt(), attention_mask=[[1] * 6] * 3), TypeError, "attention_mask must be a"),
        (lambda: generate(model, prompt(), cache=(1, 2)), TypeError, "cache must be a KVCache"),
        (lambda: generate(model, torch.zeros(3, 0, dtype=torch.long), cache=cache), ValueError,
         r"an empty prompt beside a cache must be int64 \[2, 0\]"),  # was a canvas denoised, then a cat error
        (lambda: model.denoise(prompt(2, LENGTH), cache, torch.zeros(2, LENGTH, VOCAB),
                               self_conditioning_mask=torch.ones(3)), ValueError,
         r"self_conditioning_mask must be a tensor \[batch\] = \[2\]"),
        (lambda: generate_autoregressive(model, prompt(), 0), ValueError, "max_new_tokens must be at least 1"),
        (lambda: generate_autoregressive(model, prompt(), 3, temperature=-1.0), ValueError,
         "temperature must be a finite number at least 0"),  # was silently greedy
    ]:
        with pytest.raises(error, match=message):
            call()
    with pytest.raises(ValueError, match="sliding_window: must be at least 2"):  # 1 kept every key: no window
        ModelConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                    head_dim=8, num_experts=2, top_k_experts=1, moe_intermediate_size=8, canvas_length=4,
                    sliding_window=1)


def test_a_copy_or_pickle_of_a_compiled_model_runs_its_own_weights(model):
    import copy

    twin = copy.deepcopy(model)
    twin.compile_denoiser()  # compiles lazily, at the first call: none here
    again = copy.deepcopy(twin)  # was a copy whose denoise ran `twin`'s weights (a closure over them)
    assert twin.is_compiled and not again.is_compiled
    with torch.no_grad():
        for p in again.parameters():
            p.zero_()
        assert again.denoise.__func__ is type(again).denoise  # the eager pass, bound to the copy
        assert torch.count_nonzero(again.denoise(prompt(1, LENGTH), again.encode(prompt(1)))) == 0  # its own zeros
    state = twin.__getstate__()
    assert "denoise" not in state and "denoise" in twin.__dict__  # pickles (a closure did not) and twin stays compiled


def test_a_canvas_is_stable_once_its_argmax_repeats_on_as_many_passes_as_the_threshold():
    """A count of repeats per row: rows leave (select) and a threshold of 10**9 costs no memory (a history of
    canvases would have been 10**9 x rows x length)."""
    a, b = torch.tensor([[1, 2]]), torch.tensor([[1, 3]])
    calm = torch.zeros(1, 2)
    stopper = _StableAndConfident(2, 0.5)
    assert [bool(stopper(x, calm)) for x in (a, a, b, b, b, b)] == [False, False, False, False, True, True]
    assert not bool(stopper(b, torch.ones(1, 2)))  # stable but not confident
    rows = _StableAndConfident(1, 0.5)
    rows(torch.cat([a, b]), torch.zeros(2, 2))
    rows.select(torch.tensor([1]))  # the first row finished and left
    assert rows(b, calm).tolist() == [True]
    huge = _StableAndConfident(10**9, 0.5)
    assert not any(bool(huge(a, calm)) for _ in range(5)) and huge.last.numel() == 2
    with pytest.raises(ValueError, match="stability_threshold counts passes"):
        SamplingConfig(stability_threshold=2**40)


def test_inputs_on_another_device_than_the_model_are_named(model):
    """A prompt or attention mask left on another device is refused with its name (not torch's "Expected all
    tensors to be on the same device" from inside the embedding); the meta device stands in for a GPU here."""
    with pytest.raises(ValueError, match="prompt_ids is on meta, the model on cpu"):
        generate(model, prompt().to("meta"))
    with pytest.raises(ValueError, match="attention_mask is on meta"):
        generate(model, prompt(), attention_mask=torch.ones(3, 6, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="prompt_ids is on meta, the model on cpu"):
        generate_autoregressive(model, prompt().to("meta"), 4)


def test_pins_outside_the_vocabulary_or_of_another_shape_are_refused_before_sampling(model):
    """On a GPU an out-of-range pinned id would reach the embedding as a device-side assert that poisons the
    process; it is refused up front, as are pins for another canvas."""
    from diffsolve.core import Pins

    mask = torch.zeros(3, LENGTH, dtype=torch.bool)
    mask[:, 2] = True
    values = torch.full((3, LENGTH), VOCAB)  # unpinned positions may hold anything
    values[:, 2] = 5
    generate(model, prompt(), guidance=Pins(mask, values))  # in range where pinned
    values[1, 2] = VOCAB
    with pytest.raises(ValueError, match=f"outside the model's vocabulary \\(0 to {VOCAB - 1}\\)"):
        generate(model, prompt(), guidance=Pins(mask, values))
    with pytest.raises(ValueError, match=f"pins \\[3, {LENGTH - 1}\\] tokens; the canvases are \\[3, {LENGTH}\\]"):
        generate(model, prompt(), guidance=Pins(mask[:, 1:], values[:, 1:]))


def test_one_set_of_pins_serves_every_canvas_also_when_finished_rows_are_dropped(model):
    """Pins of [1, L] hold on every canvas, as they did before pins were checked, and dropping finished rows
    keeps them (Pins.select indexed its one row by the batch's rows)."""
    from diffsolve.core import Pins

    class FirstRowSolved(Pins):  # row 0 stops after the first pass: the sampler then drops it
        def verify(self, canvas):
            return torch.arange(canvas.shape[0]) == 0 if canvas.shape[0] == 3 else torch.zeros(canvas.shape[0],
                                                                                              dtype=torch.bool)

    mask = torch.zeros(1, LENGTH, dtype=torch.bool)
    mask[0, [1, 4]] = True
    values = torch.full((1, LENGTH), 7)
    for drop in (False, True):
        out = generate(model, prompt(), SamplingConfig(max_new_tokens=LENGTH, drop_finished=drop),
                       guidance=FirstRowSolved(mask, values), generator=torch.Generator().manual_seed(0))
        assert bool((out.canvas[:, [1, 4]] == 7).all())


def test_tables_made_under_inference_mode_serve_training_afterwards(model):
    """The rotary tables are cached on first use; made under torch.inference_mode they were inference tensors,
    and a later training pass failed ("Inference tensors cannot be saved for backward")."""
    fresh = new_model(model.config, seed=1)
    p, c = prompt(), torch.randint(0, VOCAB, (3, LENGTH))
    with torch.inference_mode():
        fresh.denoise(c, fresh.encode(p))
    fresh.denoise(c, fresh.encode(p)).float().sum().backward()
    assert fresh.embed_tokens.weight.grad is not None and bool(fresh.embed_tokens.weight.grad.abs().sum() > 0)


def test_compiled_constraints_serve_one_search_and_say_so_when_reused(model):
    """Compiled constraints keep their search's state (guesses, refuted rows, random stream): a second generate
    with them, or with a copy made by repeat, is refused with what to do, instead of continuing the first
    search's state. Calls refused before they began (another canvas length, another batch) do not use them up."""
    cm = ConstraintModel(LENGTH, VOCAB, batch_size=1)
    cm.all_different(range(4), range(4, 12))
    compiled = cm.compile().repeat(3)
    with pytest.raises(ValueError, match="canvas of 8 positions"):
        generate(model, prompt(), SamplingConfig(max_new_tokens=LENGTH + 8, canvas_length=LENGTH + 8),
                 guidance=compiled)
    with pytest.raises(ValueError, match="compiled for 3 canvases, got 2"):  # refused while reading the pins
        generate(model, prompt(batch=2), AS_SAVED, guidance=compiled)
    generate(model, prompt(), AS_SAVED, guidance=compiled)
    for again in (compiled, compiled.select(torch.tensor([0, 1, 2]))):
        with pytest.raises(ValueError, match=r"compile them again \(ConstraintModel.compile\) for each generate"):
            generate(model, prompt(), AS_SAVED, guidance=again)
    generate(model, prompt(), AS_SAVED, guidance=cm.compile().repeat(3))  # compiled again: a fresh search
