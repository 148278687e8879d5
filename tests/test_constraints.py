"""The declarative constraint model and its compiled hooks."""

import numpy as np
import pytest
import torch

from diffsolve.constraints import ConstraintModel
from diffsolve.constraints.model import DEAD_ENDS
from diffsolve.core import ModelConfig, SamplingConfig, generate, new_model

DIGITS = [4, 5, 6, 7]  # token ids of the four symbols of a 4x4 Latin square
ROWS = [[4 * r + c for c in range(4)] for r in range(4)]
COLS = [[4 * r + c for r in range(4)] for c in range(4)]


def latin(batch=1):
    cm = ConstraintModel(16, 12, batch_size=batch)
    cm.allow(range(16), DIGITS)
    for group in ROWS + COLS:
        cm.all_different(group, DIGITS)
    return cm


def is_latin(grid: list[int]) -> bool:
    return all(sorted(grid[p] for p in group) == DIGITS for group in ROWS + COLS)


SOLUTION = torch.tensor([[4, 5, 6, 7, 5, 4, 7, 6, 6, 7, 4, 5, 7, 6, 5, 4]])


def test_declaration_errors():
    cm = ConstraintModel(16, 12, batch_size=2)
    for declare, message in [(lambda: cm.pin([2.7], [4]), "position must be a whole number, got 2.7"),
                             (lambda: cm.allow(range(16), [4.9]), "token must be a whole number, got 4.9"),
                             (lambda: cm.pin(["3"], [True]), "position must be a whole number, got '3'"),
                             (lambda: cm.pin([0], [4], row=0.5), "row must be a whole number, got 0.5"),
                             (lambda: cm.add_predicate("p", verify=5), "verify must be a function, got 5"),
                             (lambda: ConstraintModel(16, 12, batch_size="2"), "batch_size must be a whole number")]:
        with pytest.raises(TypeError, match=message):  # never truncated to 2 or 4, nor failing later inside torch
            declare()
    assert cm.pins.eq(-1).all() and cm.allowed is None and not cm.predicates
    cm.pin(torch.tensor([1]), [np.array(4)], row=torch.tensor(1))  # tensors and arrays of whole numbers are fine
    assert cm.pins[1, 1] == 4
    cm.pins[1, 1] = -1
    with pytest.raises(ValueError, match="outside the canvas"):
        cm.pin([16], [4])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        cm.allow([0], [12])
    with pytest.raises(ValueError, match="outside the batch"):
        cm.pin([0], [4], row=2)
    cm.pin([0], [4], row=0)
    with pytest.raises(ValueError, match="already pinned"):
        cm.pin([0], [5], row=0)
    cm.allow([0], [5, 6], row=0)
    with pytest.raises(ValueError, match="row 0: pinned token at position 0 is not in its allowed set"):
        cm.compile()
    with pytest.raises(ValueError, match="all_different: position 1 given twice"):
        cm.all_different([0, 1, 1], DIGITS)
    with pytest.raises(ValueError, match="pin: position 3 given twice"):
        cm.pin([2, 3, 3], [4, 5, 5])
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        latin().compile().repeat(0)
    with pytest.raises(ValueError, match="device tpu: expected cpu, cuda or cuda:N"):
        latin().compile(device="tpu")
    with pytest.raises(ValueError, match="all_different: no values"):
        cm.all_different([1, 2], [])


def test_sets_are_taken_where_order_does_not_matter_and_refused_where_pins_pair_them():
    cm = ConstraintModel(40, 50)
    cm.allow({3, 1}, {5, 7}).all_different({10, 11}, {5, 7})
    assert cm.allowed[0, 3, [5, 7]].all() and cm.allowed[0, 3].sum() == 2 and cm.allowed[0, 1].sum() == 2
    for positions, tokens in [({33, 1}, [10, 20]), ([33, 1], {10, 20})]:  # which position gets which token?
        with pytest.raises(TypeError, match="not a set \\(it has no order"):
            cm.pin(positions, tokens)
    cm.pin([33, 1], [10, 20])
    assert cm.pins[0, [33, 1]].tolist() == [10, 20]


def test_two_pins_of_one_value_in_a_group_are_refused_at_compile():
    cm = latin()
    cm.pin([0, 3], [5, 5], row=0)  # one row of the square
    with pytest.raises(ValueError, match="row 0: the token pinned at position 0 is also pinned at another position"):
        cm.compile()


def test_later_declarations_do_not_change_a_compiled_model():
    cm = ConstraintModel(3, 5)
    cm.allow([1], [3, 4])
    compiled = cm.compile()
    cm.pin([0], [2])
    cm.allow([1], [3])
    assert compiled.pinned(1, torch.device("cpu")) is None
    assert compiled.static_allowed[0, 1].nonzero().flatten().tolist() == [3, 4]


def test_an_exact_group_holds_only_its_values():
    cm = ConstraintModel(3, 5, batch_size=2)
    cm.all_different([0, 1, 2], [1, 2, 3], exact=True)
    compiled = cm.compile()
    assert compiled.verify(torch.tensor([[0, 0, 4], [3, 1, 2]])).tolist() == [False, True]
    allowed = compiled.allowed(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool))
    assert allowed.nonzero()[:, 2].unique().tolist() == [1, 2, 3]


def test_a_value_given_twice_is_one_value_of_its_group():
    """[3, 3, 4] over two places is the permutation of 3 and 4 (a doubled value once added its bit twice in the Hall
    tables, carrying into another value's bit); one place settled to 3 leaves 4 for the other."""
    cm = ConstraintModel(2, 6, batch_size=3)
    cm.all_different([0, 1], [3, 3, 4], exact=True)
    compiled = cm.compile()
    canvas, settled = torch.tensor([[3, 0]] * 3), torch.tensor([[True, False]] * 3)
    assert compiled.allowed(canvas, settled)[0, 1].nonzero().flatten().tolist() == [4]
    assert compiled.verify(torch.tensor([[3, 4], [4, 3], [3, 3]])).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="3 positions but 2 values"):
        ConstraintModel(3, 6).all_different([0, 1, 2], [3, 3, 4], exact=True)


@pytest.mark.parametrize("dead_end", ["restart", "backtrack"])
def test_positions_free_to_take_other_tokens_are_never_a_dead_end(dead_end):
    """A group constrains only its values: with more positions than values, or values shared between groups,
    or a position allowed a token outside its group, a solution exists and nothing may be ruled impossible."""
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    # (a) no `allow`: the third position takes any other token
    cm = ConstraintModel(3, 5)
    cm.all_different([0, 1, 2], [1, 2])
    compiled = cm.compile(dead_end=dead_end)
    canvas = torch.tensor([[1, 2, 0]])
    assert compiled.verify(canvas).tolist() == [True]
    _, dead = compiled._propagate(canvas, torch.tensor([[True, True, False]]))  # 1 and 2 used: 0 takes another
    assert not dead.any()
    compiled.allowed(canvas, nothing)
    compiled.violations(canvas, torch.tensor([[True, True, False]]))
    assert not compiled.refuted.any()
    # (b) two groups over the same positions with different values
    cm = ConstraintModel(3, 5)
    cm.allow(range(3), [1, 2, 3])
    cm.all_different([0, 1, 2], [1, 2])
    cm.all_different([0, 1, 2], [3])
    compiled = cm.compile(dead_end=dead_end)
    assert compiled.verify(torch.tensor([[1, 2, 3]])).tolist() == [True]
    _, dead = compiled._propagate(torch.tensor([[1, 2, 3]]), nothing)
    assert not dead.any()
    # (c) position 0 settles on 1 where it could have taken 3: a guess, not a forced move ([3, 1, 2] solves it)
    cm = ConstraintModel(3, 4)
    cm.allow([0], [1, 3])
    cm.allow([1, 2], [1, 2])
    cm.all_different([0, 1, 2], [1, 2])
    compiled = cm.compile(dead_end=dead_end)
    canvas = torch.tensor([[1, 1, 2]])
    compiled.allowed(canvas, nothing)
    compiled.violations(canvas, torch.tensor([[True, False, False]]))
    assert not compiled.refuted.any()
    assert int(compiled.trail.ruled_at[0, 0, 0]) == 0  # a guess proved wrong (1 at position 0), not a refutation


def test_most_constrained_first_lets_positions_in_no_group_settle():
    cm = ConstraintModel(4, 8)
    cm.allow(range(4), [4, 5, 6])
    cm.all_different([0, 1], [4, 5])  # positions 2 and 3 are in no group
    compiled = cm.compile(most_constrained_first=True)
    canvas, nothing = torch.full((1, 4), 4), torch.zeros(1, 4, dtype=torch.bool)
    compiled.allowed(canvas, nothing)
    assert compiled.settleable(canvas, nothing)[0, 2:].all()


def test_constraints_declared_for_another_canvas_or_vocabulary_are_named():
    model = untrained_model()  # a canvas of 16 positions over 12 tokens
    for length, vocab in [(8, 12), (16, 14)]:
        guidance = ConstraintModel(length, vocab).compile()
        with pytest.raises(ValueError, match=f"declared for a canvas of {length} positions over {vocab} tokens; "
                                             "this model samples 16 over 12"):
            generate(model, torch.ones(1, 2, dtype=torch.long), guidance=guidance)


def test_constraints_compiled_for_another_device_are_named():
    compiled = latin().compile()
    compiled.device = torch.device("cuda", 1)  # as compile(device="cuda:1") records it, on a machine without one
    with pytest.raises(ValueError, match="compiled for cuda:1, the model is on cpu: compile them with device=model"):
        generate(untrained_model(), torch.full((1, 3), 3), SamplingConfig(max_denoising_steps=2), guidance=compiled)


def test_search_over_guesses_needs_a_sampler_that_keeps_accepted_tokens():
    guidance = exact_latin({0: 4})
    with pytest.raises(ValueError, match="keep_accepted=True"):
        generate(untrained_model(), torch.full((1, 3), 3), SamplingConfig(max_denoising_steps=4), guidance=guidance)


def test_verify_accepts_solutions_and_rejects_broken_ones():
    guidance = latin().compile()
    assert guidance.verify(SOLUTION).tolist() == [True]
    broken = SOLUTION.clone()
    broken[0, [0, 1]] = broken[0, [1, 0]]  # columns now repeat
    out_of_domain = SOLUTION.clone()
    out_of_domain[0, 5] = 3
    assert latin(2).compile().verify(torch.cat((broken, out_of_domain))).tolist() == [False, False]


def test_allowed_removes_values_settled_in_a_shared_group():
    guidance = latin().compile()
    canvas = SOLUTION.clone()
    settled = torch.zeros(1, 16, dtype=torch.bool)
    settled[0, 0] = True  # token 4 settled at r0c0
    allowed = guidance.allowed(canvas, settled)[0]
    assert not allowed[1, 4] and not allowed[4, 4]  # same row, same column
    assert allowed[5, 4]  # r1c1 shares no group with r0c0
    assert allowed[0, 4]  # the settled cell keeps its own token
    assert not allowed[:, 8].any()  # outside the allowed set


def test_violations_blame_duplicates_but_never_pins():
    cm = latin()
    cm.pin([0], [4])
    guidance = cm.compile()
    canvas = SOLUTION.clone()
    canvas[0, 1] = 4  # duplicate of the pinned 4 in row 0
    canvas[0, 14] = 7
    canvas[0, 15] = 7  # duplicate pair in row 3 (and column 3 with r0c3)
    accepted = torch.ones(1, 16, dtype=torch.bool)
    bad = guidance.violations(canvas, accepted)[0]
    assert bad[1] and not bad[0]
    assert bad[14] and bad[15] and bad[3]
    assert bad[5] and bad[6]  # r1c1 repeats the new 4 in column 1; r1c2 repeats the new 7 in column 2
    assert not bad[8] and not bad[10]


def test_repeat_keeps_rows_for_predicates():
    cm = ConstraintModel(4, 10, batch_size=2)
    targets = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])
    cm.add_predicate("equals target", verify=lambda canvas, rows: (canvas == targets[rows]).all(-1))
    guidance = cm.compile().repeat(3)
    canvas = torch.cat((targets[[0, 0, 0]], targets[[1, 1, 0]]))
    assert guidance.verify(canvas).tolist() == [True, True, True, True, True, False]


def untrained_model():
    cfg = ModelConfig(vocab_size=12, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=16, num_experts=4, top_k_experts=2, moe_intermediate_size=32,
                      layer_types=["sliding_attention", "full_attention"], sliding_window=8, canvas_length=16)
    model = new_model(cfg, seed=0).eval()
    model.generation_config = SamplingConfig(max_new_tokens=16)  # as save_pretrained writes it: one canvas
    return model


@pytest.mark.parametrize("drop_finished", [False, True])
def test_guidance_alone_solves_latin_squares_with_an_untrained_model(drop_finished):
    """Masks + re-noising + verification steer even random weights to verified answers; dropping finished
    rows from the batch keeps every row's answer and pass count."""
    model = untrained_model()
    cm = latin(batch=2)
    cm.pin([0, 5], [4, 4], row=0)
    guidance = cm.compile().repeat(4)
    config = SamplingConfig(max_denoising_steps=64, stability_threshold=None, keep_accepted=True,
                            drop_finished=drop_finished)
    out = generate(model, torch.full((8, 3), 3), config,
                   guidance=guidance, generator=torch.Generator().manual_seed(0))
    assert out.solved.view(2, 4).any(1).all()  # every instance solved by one of its 4 canvases
    passes = out.forward_passes.view(2, 4)
    assert (passes == passes[:, :1]).all()  # once one canvas is verified, its siblings retire
    for row, solved in zip(out.canvas.tolist(), out.solved.tolist()):
        assert solved == is_latin(row)  # independent check: solved <=> really a Latin square
    assert all(out.canvas[i, [0, 5]].tolist() == [4, 4] for i in range(4))


def exact_latin(pins: dict[int, int], dead_end: str = "restart"):
    cm = ConstraintModel(16, 12)
    cm.allow(range(16), DIGITS)
    for group in ROWS + COLS:
        cm.all_different(group, DIGITS, exact=True)
    cm.pin(list(pins), list(pins.values()))
    return cm.compile(dead_end=dead_end)


def all_latin_squares() -> list[list[int]]:
    from itertools import permutations

    rows = list(permutations(DIGITS))
    out = []
    for a in rows:
        for b in rows:
            for c in rows:
                for d in rows:
                    grid = [*a, *b, *c, *d]
                    if is_latin(grid):
                        out.append(grid)
    return out


def test_propagation_masks_single_candidates_and_single_places():
    pins = {0: 4, 1: 5, 2: 6, 9: 4, 14: 4}  # row 0 = 4 5 6 _; 4 also at r2c1 and r3c2
    guidance = exact_latin(pins)
    canvas = torch.tensor([[pins.get(i, 7) for i in range(16)]])
    allowed = guidance.allowed(canvas, torch.zeros(1, 16, dtype=torch.bool))[0]
    assert allowed[3].nonzero().squeeze(1).tolist() == [7]  # the one digit row 0 lacks
    assert allowed[7].nonzero().squeeze(1).tolist() == [4]  # row 1's 4 has no other column left
    assert not allowed[[4, 5, 6], 4].any()


def test_restart_rules_out_only_guesses_no_completion_allows():
    squares = all_latin_squares()
    assert len(squares) == 576
    generator = torch.Generator().manual_seed(0)
    checked = ruled = 0
    for trial in range(60):
        truth = squares[int(torch.randint(0, 576, (1,), generator=generator))]
        shown = torch.randperm(16, generator=generator)[:int(torch.randint(3, 8, (1,), generator=generator))]
        pins = {int(p): truth[int(p)] for p in shown}
        guidance = exact_latin(pins)
        canvas = torch.tensor([[pins.get(i, 4) for i in range(16)]])
        settled = torch.zeros(1, 16, dtype=torch.bool)
        candidates = guidance.allowed(canvas, settled)[0]
        options = [(p, t) for p in range(16) if p not in pins for t in DIGITS if candidates[p, t]
                   and int(candidates[p].sum()) > 1]
        if not options:
            continue
        position, token = options[int(torch.randint(0, len(options), (1,), generator=generator))]
        guessed = canvas.clone()
        guessed[0, position] = token
        accepted = torch.zeros(1, 16, dtype=torch.bool)
        accepted[0, position] = True
        bad = guidance.violations(guessed, accepted)[0]
        possible = any(all(sq[p] == t for p, t in pins.items()) and sq[position] == token for sq in squares)
        ruled_out = bool((guidance.trail.ruled_at[0, position] >= 0).any())
        assert not (possible and ruled_out)  # sound: never rules out a value some completion uses
        assert bool(bad[position]) == ruled_out  # a dead end after one guess restarts and rules it out
        checked += 1
        ruled += ruled_out
    assert checked > 30 and ruled > 0


def test_a_settled_value_is_masked_for_peers_that_could_also_take_other_tokens():
    """Route canvases: positions may hold a node (all different) or EOS/padding (repeatable)."""
    nodes, eos = [4, 5, 6], 9
    cm = ConstraintModel(4, 12)
    cm.allow(range(4), [*nodes, eos])
    cm.all_different(range(4), nodes)
    guidance = cm.compile()
    canvas = torch.tensor([[5, 4, 4, 4]])
    settled = torch.tensor([[True, False, False, False]])
    allowed = guidance.allowed(canvas, settled)[0]
    assert not allowed[1:, 5].any() and allowed[1:, 4].all() and allowed[1:, eos].all()


def test_hall_sets_give_their_values_to_their_positions_alone():
    cm = ConstraintModel(4, 12)
    cm.allow(range(4), DIGITS)
    cm.allow([0, 1], DIGITS[:2])  # positions 0 and 1 take 4 and 5 between them ...
    cm.all_different(range(4), DIGITS, exact=True)
    guidance = cm.compile()
    allowed = guidance.allowed(torch.full((1, 4), 4), torch.zeros(1, 4, dtype=torch.bool))[0]
    assert not allowed[2:, DIGITS[:2]].any()  # ... so 2 and 3 lose them (no single forces this)
    assert allowed[2:, DIGITS[2:]].all() and allowed[:2, DIGITS[:2]].all()

    cm.allow([2], DIGITS[:2])  # three positions inside two values: a dead end
    _, dead = cm.compile()._propagate(torch.full((1, 4), 4), torch.zeros(1, 4, dtype=torch.bool))
    assert dead.any()


def hall_step_by_definition(groups, candidates):
    """One Hall round written out set by set: for every group and every non-empty subset S of its values, the
    positions whose candidates lie inside S; as many as |S| and the others lose S, more and the group is dead."""
    narrowed, dead = candidates.clone(), torch.zeros(candidates.shape[:2], dtype=torch.bool)
    for b in range(candidates.shape[0]):
        for positions, values in groups:
            for pick in range(1, 1 << len(values)):
                chosen = {values[i] for i in range(len(values)) if pick >> i & 1}
                inside = [p for p in positions if set(candidates[b, p].nonzero().flatten().tolist()) <= chosen]
                if len(inside) > len(chosen):
                    dead[b, positions] = True
                elif len(inside) == len(chosen):
                    for p in set(positions) - set(inside):
                        narrowed[b, p, list(chosen)] = False
    return narrowed, dead


def test_hall_step_matches_its_definition_on_random_candidates():
    """The subset transforms of `_hall_step` against the definition, on groups of 2-5 positions (exact groups of
    their own values) and random candidate sets, with small Hall sets planted often enough to fire."""
    generator = torch.Generator().manual_seed(0)
    cm = ConstraintModel(11, 16)
    cm.allow(range(11), range(3, 9))
    layout = [([0, 1, 2, 3, 4], [3, 4, 5, 6, 7]), ([5, 6, 7], [3, 5, 8]), ([8, 9], [4, 6])]
    for positions, values in layout:
        cm.all_different(positions, values, exact=True)
    cm.all_different([1, 5, 8, 10], range(3, 9))  # a wide group: outside the Hall tables
    guidance = cm.compile()
    groups = [(positions, guidance.domain_index[torch.tensor(values)].tolist()) for positions, values in layout]
    fired = died = 0
    for density in (0.3, 0.5, 0.8):
        candidates = torch.rand(64, 11, guidance.domain.numel(), generator=generator) < density
        candidates &= guidance.own_values
        narrowed, dead = guidance._hall_step(candidates)
        expected_narrowed, expected_dead = hall_step_by_definition(groups, candidates)
        assert torch.equal(narrowed, expected_narrowed) and torch.equal(dead, expected_dead)
        fired += int((narrowed != candidates).any(-1).any(-1).sum())
        died += int(dead.any(-1).sum())
    assert fired > 20 and died > 20  # both outcomes were exercised
    empty = guidance.select(torch.tensor([], dtype=torch.long))  # a batch of no canvases propagates to nothing
    candidates, dead = empty._propagate(torch.zeros(0, 11, dtype=torch.long), torch.zeros(0, 11, dtype=torch.bool))
    assert candidates.shape == (0, 11, guidance.domain.numel()) and dead.shape == (0, 11)


def test_a_wide_group_with_fewer_values_than_free_positions_is_a_dead_end():
    cm = ConstraintModel(3, 12)
    cm.allow(range(3), DIGITS[:2])  # a triangle with two colours: no single position is stuck yet
    cm.all_different(range(3), DIGITS)
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    _, dead = cm.compile()._propagate(torch.full((1, 3), 4), nothing)
    assert dead.all()

    pairs = ConstraintModel(3, 12)  # the same edges as three pairs: pairwise masks cannot see it
    pairs.allow(range(3), DIGITS[:2])
    for group in ([0, 1], [1, 2], [0, 2]):
        pairs.all_different(group, DIGITS)
    assert not pairs.compile()._propagate(torch.full((1, 3), 4), nothing)[1].any()

    tight = ConstraintModel(3, 12)  # three values for three positions: 6 fits only position 2, so it goes there
    tight.allow([0, 1], DIGITS[:2])
    tight.allow([2], DIGITS[:3])
    tight.all_different(range(3), DIGITS)
    candidates, dead = tight.compile()._propagate(torch.full((1, 3), 4), nothing)
    assert not dead.any() and candidates[0, 2].tolist() == [False, False, True, False]

    roomy = ConstraintModel(3, 12)
    roomy.allow(range(3), DIGITS[:3])
    roomy.all_different(range(3), DIGITS)
    assert not roomy.compile()._propagate(torch.full((1, 3), 4), nothing)[1].any()


def test_propagation_never_masks_a_value_some_completion_uses():
    squares = all_latin_squares()
    generator = torch.Generator().manual_seed(1)
    pruned = 0
    for trial in range(40):
        truth = squares[int(torch.randint(0, 576, (1,), generator=generator))]
        shown = torch.randperm(16, generator=generator)[:int(torch.randint(2, 7, (1,), generator=generator))]
        pins = {int(p): truth[int(p)] for p in shown}
        guidance = exact_latin(pins)
        canvas = torch.tensor([[pins.get(i, 4) for i in range(16)]])
        allowed = guidance.allowed(canvas, torch.zeros(1, 16, dtype=torch.bool))[0]
        used = {(p, sq[p]) for sq in squares if all(sq[q] == t for q, t in pins.items()) for p in range(16)}
        assert all(bool(allowed[p, t]) for p, t in used)
        pruned += sum(not allowed[p, t] for p in range(16) for t in DIGITS) - sum(1 for p in pins for t in DIGITS
                                                                                    if t != pins[p])
    assert pruned > 0


def test_parallel_canvases_share_what_a_failed_first_guess_proves():
    squares = all_latin_squares()
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        truth = squares[int(torch.randint(0, 576, (1,), generator=generator))]
        shown = torch.randperm(16, generator=generator)[:4]
        pins = {int(p): truth[int(p)] for p in shown}
        guidance = exact_latin(pins).repeat(2)
        canvas = torch.tensor([[pins.get(i, 4) for i in range(16)]] * 2)
        candidates = guidance.allowed(canvas, torch.zeros(2, 16, dtype=torch.bool))[0]
        options = [(p, t) for p in range(16) if p not in pins for t in DIGITS
                   if candidates[p, t] and int(candidates[p].sum()) > 1]
        for position, token in options:
            possible = any(all(sq[p] == t for p, t in pins.items()) and sq[position] == token for sq in squares)
            if possible:
                continue
            guessed = canvas.clone()
            guessed[0, position] = token  # only the first canvas guesses
            accepted = torch.zeros(2, 16, dtype=torch.bool)
            accepted[0, position] = True
            guidance.violations(guessed, accepted)
            ruled = guidance.trail.ruled_at[:, position, DIGITS.index(token)]
            if bool(ruled[0] == 0):
                assert bool(ruled[1] == 0)  # its sibling never guessed it but knows it too
                return
            guidance = exact_latin(pins).repeat(2)
            guidance.allowed(canvas, torch.zeros(2, 16, dtype=torch.bool))
    raise AssertionError("no first guess failed on its own in 200 trials")


@pytest.mark.parametrize("dead_end", ["restart", "backtrack"])
def test_only_rows_without_a_completion_are_refuted_and_they_retire(dead_end):
    """Random clue sets (no two equal clues in a line), some with no completion: the search proves those
    impossible (every value of some position ruled out with no guess standing) and stops their canvases;
    it never refutes a row that has a completion."""
    squares = all_latin_squares()
    generator = torch.Generator().manual_seed(1)
    model = untrained_model()
    refuted_total = solvable_total = 0
    for trial in range(16):
        pins: dict[int, int] = {}
        for position in torch.randperm(16, generator=generator)[:5].tolist():
            token = DIGITS[int(torch.randint(0, 4, (1,), generator=generator))]
            if all(pins.get(p) != token for group in ROWS + COLS if position in group for p in group):
                pins[position] = token
        guidance = exact_latin(pins, dead_end).repeat(4)
        config = SamplingConfig(max_denoising_steps=96, stability_threshold=None, keep_accepted=True,
                                drop_finished=True)
        out = generate(model, torch.full((4, 3), 3), config, guidance=guidance,
                       generator=torch.Generator().manual_seed(trial))
        completable = any(all(sq[p] == t for p, t in pins.items()) for sq in squares)
        refuted = bool(guidance.refuted[0])
        assert not (completable and refuted)
        if refuted:
            assert not out.solved.any() and (out.forward_passes < 96).all()
        refuted_total += refuted
        solvable_total += completable
    assert solvable_total > 0 and refuted_total == 16 - solvable_total > 0  # 4x4: every impossible one proved


@pytest.mark.parametrize("dead_end", DEAD_ENDS)
def test_what_the_declarations_alone_rule_out_is_refuted_at_compile(dead_end):
    """A pigeonhole (five positions, four values) or an exact group with no place for two of its values has no
    solution: refuted when compiled, under every dead-end policy, and its canvases stop after one pass. Random
    clue sets of the exact 4x4 Latin square: only those with no completion are ever refuted at compile."""
    cm = ConstraintModel(16, 12, batch_size=3)
    cm.allow(range(5), DIGITS, row=0).all_different(range(5), DIGITS)  # 5 positions, 4 values
    cm.allow(range(4), DIGITS[:2], row=1).all_different(range(4), DIGITS, exact=True)  # 6 and 7 have no place
    cm.allow(range(5, 16), [8], row=2)  # row 2: positions 0-3 may hold 4 and 5, 4 may take anything
    guidance = cm.compile(dead_end=dead_end)
    assert guidance.refuted.tolist() == [True, True, False]
    config = SamplingConfig(max_denoising_steps=20, stability_threshold=None, keep_accepted=True)
    out = generate(untrained_model(), torch.full((3, 3), 3), config, guidance=guidance,
                   generator=torch.Generator().manual_seed(0))
    assert out.forward_passes[:2].tolist() == [1, 1] and not out.solved[:2].any()
    squares, generator = all_latin_squares(), torch.Generator().manual_seed(2)
    refuted_total = 0
    for _ in range(40):
        positions = torch.randperm(16, generator=generator)[:6].tolist()
        pins = {p: DIGITS[int(torch.randint(0, 4, (1,), generator=generator))] for p in positions}
        if any(pins.get(p) == pins[q] for q in pins for group in ROWS + COLS if q in group for p in group if p != q):
            continue  # two equal pins in one group: refused at compile (another test)
        refuted = bool(exact_latin(pins, dead_end).refuted[0])
        assert not (refuted and any(all(sq[p] == t for p, t in pins.items()) for sq in squares))
        refuted_total += refuted
    assert refuted_total > 0


def star():
    """Centre 3 with leaves 0, 1, 2 (each edge an all-different pair), two values A=4 and B=5."""
    cm = ConstraintModel(4, 8)
    cm.allow(range(4), [4, 5])
    for leaf in range(3):
        cm.all_different([leaf, 3], [4, 5])
    return cm.compile(dead_end="repair")


def test_repair_fixes_a_dead_position_with_its_cheapest_value_and_bars_the_holder():
    guidance = star()
    canvas = torch.tensor([[4, 4, 5, 0]])  # leaves A, A, B: the centre has no value left
    settled = torch.tensor([[True, True, True, False]])
    guidance.allowed(canvas, settled)
    # B costs one holder (leaf 2), A two: only leaf 2 is re-noised
    assert guidance.violations(canvas, settled).tolist() == [[False, False, True, False]]
    allowed = guidance.allowed(canvas, torch.tensor([[True, True, False, False]]))
    assert allowed[0, 3, [4, 5]].tolist() == [False, True]  # the centre's last candidate is B
    barred = guidance.tabu_until[0, :, guidance.domain_index[5]] > guidance.clock[0]
    assert barred.tolist() == [False, False, True, False]  # leaf 2 may not retake B for a while


def test_repair_lets_a_position_propagation_empties_take_a_value_no_settled_peer_holds():
    cm = ConstraintModel(2, 8)
    cm.allow(range(2), [4])
    cm.all_different([0, 1], [4, 5])
    empty = torch.zeros(1, 2, dtype=torch.bool)
    canvas = torch.zeros(1, 2, dtype=torch.long)
    # Each free position has only A, so propagation empties both: a proof of no solution, but local search
    # keeps a legal partial assignment and may still place one of them.
    assert cm.compile(dead_end="repair").allowed(canvas, empty)[0, :, 4].tolist() == [True, True]
    for proof_based in ("release", "restart"):
        assert cm.compile(dead_end=proof_based).allowed(canvas, empty)[0, :, 4].tolist() == [False, False]


def test_flags_and_predicate_results_are_checked_and_masks_are_copies():
    with pytest.raises(TypeError, match="exact must be True or False, got 'no'"):  # was an exact group
        ConstraintModel(4, 6, 1).all_different([0, 1], [3, 4], exact="no")
    with pytest.raises(TypeError, match="most_constrained_first must be True or False"):
        ConstraintModel(4, 6, 1).all_different([0, 1], [3, 4]).compile(most_constrained_first="no")
    canvas = torch.tensor([[3, 4, 0, 0]])
    for result, got in [(lambda c, r: torch.ones(c.shape[0], dtype=torch.long), "torch.int64 \\[1\\]"),
                        (lambda c, r: torch.ones(c.shape[0], 1, dtype=torch.bool), "torch.bool \\[1, 1\\]"),
                        (lambda c, r: np.ones(c.shape[0], dtype=bool), "bool \\[1\\]")]:  # numpy: verify gave uint8
        guidance = ConstraintModel(4, 6, 1).add_predicate("p", verify=result).compile()
        with pytest.raises(TypeError, match=f"predicate 'p': verify must return a bool tensor \\[1\\] .*got {got}"):
            guidance.verify(canvas)
    guidance = ConstraintModel(4, 3, 1).allow([0], [1]).compile()
    start = torch.tensor([[2, 0, 0, 0]])
    mask = guidance.allowed(start, torch.zeros(1, 4, dtype=torch.bool))
    mask[0, 0, 2] = True  # the caller's own copy: was the compiled mask itself
    assert not guidance.verify(start).any()
    pinned = ConstraintModel(4, 5, 1).pin([0], [3]).compile()
    pins, _ = pinned.pinned(1, torch.device("cpu"))
    pins[:] = False  # the caller's own copy of the pin mask too
    assert not pinned.verify(torch.tensor([[0, 0, 0, 0]])).any()
    only_predicates = ConstraintModel(4, 5, 1).add_predicate("p", verify=lambda c, r: c[:, 0] == 1).compile()
    assert only_predicates.allowed(start, torch.zeros(1, 4, dtype=torch.bool)) is None  # was None.clone()


def test_solved_holds_for_the_canvas_returned_after_eos_padding():
    from diffsolve.core import load_model, one_canvas
    from diffsolve.solvers.checkpoints import default_checkpoint
    from diffsolve.tasks import sorting

    model, digits = load_model(default_checkpoint("sorting")), sorting.DIGIT_IDS
    prompts = sorting.encode_prompt(torch.randint(0, 10, (2, 16), generator=torch.Generator().manual_seed(0)))
    guidance = ConstraintModel(16, 14, 2).allow(range(16), digits + [1]).pin([5, 10], [1, digits[7]]).compile()
    config = SamplingConfig(keep_accepted=True, eos_token_id=1, pad_token_id=0, **one_canvas(16))
    out = generate(model, prompts, config, guidance=guidance, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.solved, guidance.verify(out.canvas))  # was solved for a canvas whose pin became padding
    assert (out.canvas[:, 10] == 0).all()  # after the EOS pinned at 5
