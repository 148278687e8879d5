"""The DiffusionGemma training objective and the resumable loop."""

import json
import math
import os
import signal
import sys
import time

import pytest
import torch

from diffsolve.core import ModelConfig, load_model, new_model
from diffsolve.core.provenance import source_description
from diffsolve.core.training import (Batch, ResumeError, TrainConfig, TrainingDiverged, TrainingInterrupted,
                                     diffusion_loss, find_checkpoint, lr_at, make_optimizer, step_generators,
                                     train)

CFG = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2, num_kv_heads=1,
                  head_dim=16, num_experts=4, top_k_experts=2, moe_intermediate_size=16,
                  layer_types=["sliding_attention", "full_attention"], sliding_window=6, canvas_length=8)


def copy_batch(step: int, g: torch.Generator) -> Batch:
    """Canvas = a copy of the prompt; a task a tiny model starts learning within a few dozen steps."""
    prompt = torch.randint(4, 16, (16, 8), generator=g)
    return Batch(prompt, prompt.clone())


def test_truncated_training_cache_equals_encoding_the_prompt_alone():
    model = new_model(CFG, seed=0).eval()
    batch = copy_batch(0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model.encode_logits(torch.cat((batch.prompt, batch.target), 1), keep_full=True)
        cut = full.truncate(8, model.window, CFG.layers)
        alone = model.encode(batch.prompt)
        for a, b in zip(cut.keys + cut.values, alone.keys + alone.values):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_loss_has_both_parts_and_gradients_reach_every_shared_weight():
    model = new_model(CFG, seed=0)
    loss, parts = diffusion_loss(model, copy_batch(0, torch.Generator().manual_seed(1)),
                                 torch.Generator().manual_seed(2), self_conditioning_prob=1.0)
    assert abs(parts["loss"] - parts["canvas_loss"] - parts["ar_loss"]) < 1e-4
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_training_learns_and_resumes_exactly(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=16, lr=1e-2, warmup_steps=5, checkpoint_every=20, log_every=10)
    straight = new_model(CFG, seed=0)
    summary = train(straight, copy_batch, cfg, tmp_path / "straight", progress=False)
    log = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["canvas_loss"] < 0.8 * log[0]["canvas_loss"]  # 0.70-0.76 at seeds 0-3
    assert summary["resumed_from"] == 0

    interrupted = new_model(CFG, seed=0)
    assert train(interrupted, copy_batch, cfg, tmp_path / "split", progress=False, stop_after=20)["steps"] == 20
    resumed = new_model(CFG, seed=99)  # different init: everything must come from the checkpoint
    summary = train(resumed, copy_batch, cfg, tmp_path / "split", progress=False)
    assert summary["resumed_from"] == 20
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    saved = load_model(tmp_path / "split" / "checkpoint")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), resumed.state_dict().values()))


def poisoned(model, bad_steps):
    """copy_batch, with the gradient of one weight turned to NaN at the 0-based steps in `bad_steps` (as an
    overflow in bf16 would)."""
    now = {"step": -1}
    model.embed_tokens.weight.register_hook(lambda g: g * float("nan") if now["step"] in bad_steps else g)

    def make_batch(step, g):
        now["step"] = step
        return copy_batch(step, g)
    return make_batch


def test_a_step_with_a_nan_gradient_is_skipped_and_training_goes_on(tmp_path):
    cfg = TrainConfig(steps=20, batch_size=16, lr=1e-2, warmup_steps=5, checkpoint_every=10, log_every=5)
    model = new_model(CFG, seed=0)
    summary = train(model, poisoned(model, {7}), cfg, tmp_path, progress=False)
    assert summary["steps"] == 20 and all(torch.isfinite(p).all() for p in model.parameters())
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [entry["skipped"] for entry in log] == [0.0, 0.2, 0.0, 0.0]  # one of steps 6-10
    assert all(math.isfinite(entry["grad_norm"]) and math.isfinite(entry["loss"]) for entry in log)  # the other 4


def test_a_diverged_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=16, lr=1e-2, warmup_steps=5, checkpoint_every=5, log_every=5)
    model = new_model(CFG, seed=0)
    with pytest.raises(TrainingDiverged, match=r"inf or NaN at steps 12-19, .*checkpoint at step 15 is kept.*"
                                               r"in a new run directory"):
        train(model, poisoned(model, set(range(11, 40))), cfg, tmp_path, progress=False)
    kept = load_model(find_checkpoint(tmp_path / "checkpoint"))  # loads: its weights are finite
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), model.state_dict().values()))


def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")  # POSIX only
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, checkpoint_every=10, log_every=1)
    with open(tmp_path / ".train.lock", "w") as other:  # as another process training there holds it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ResumeError, match="another training process is running in this directory"):
            train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False)
        assert not (tmp_path / "checkpoint").exists()
    assert train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False)["steps"] == 2


def test_time_budget_stops_early_with_a_checkpoint(tmp_path):
    cfg = TrainConfig(steps=10_000, batch_size=4, warmup_steps=2, checkpoint_every=10_000, log_every=5,
                      time_budget_s=1.0)
    summary = train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False)
    assert 0 < summary["steps"] < 10_000
    state = json.loads((tmp_path / "checkpoint" / "training_state.json").read_text())
    assert state["step"] == summary["steps"] and state["elapsed_s"] >= 1.0
    assert 0 < state["warmup_end_s"] < state["elapsed_s"]  # kept, so that a resumed run's clock goes on alike


def test_a_run_stopped_inside_warmup_keeps_the_warmup_relative_clock_when_resumed(tmp_path):
    # the key is written (null) before warmup ends: a missing key marks only checkpoints older than the clock
    cfg = TrainConfig(steps=40, batch_size=4, warmup_steps=6, checkpoint_every=100, log_every=100,
                      time_budget_s=3600.0)
    train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False, stop_after=3)
    state = tmp_path / "checkpoint" / "training_state.json"
    assert json.loads(state.read_text())["warmup_end_s"] is None
    shorter = TrainConfig(**{**cfg.__dict__, "steps": 20, "warmup_steps": 2})  # fewer steps: a shorter warmup
    train(new_model(CFG, seed=0), copy_batch, shorter, tmp_path, progress=False)
    assert json.loads(state.read_text())["warmup_end_s"] > 0  # was taken for an old checkpoint: 0, the run's start


def test_the_clock_schedule_starts_its_cosine_at_the_peak_when_warmup_ends():
    # the clock used to count from the run's start: a warmup slowed by compiling (here 60 of 100 s) made the rate
    # drop from the peak to about 0.4 of it in one step
    cfg = TrainConfig(steps=100_000, lr=1.0, min_lr_ratio=0.1, warmup_steps=10, time_budget_s=100.0)
    assert lr_at(9, cfg, 59.0) == 1.0
    assert lr_at(10, cfg, 60.0, warmup_end_s=60.0) == 1.0
    assert lr_at(11, cfg, 80.0, warmup_end_s=60.0) == pytest.approx(0.1 + 0.9 * 0.5)  # half the 40 s left
    assert lr_at(12, cfg, 100.0, warmup_end_s=60.0) == pytest.approx(0.1)
    assert lr_at(12, cfg, 120.0, warmup_end_s=110.0) == pytest.approx(0.1)  # warmup outlasted the budget


def test_a_steps_data_and_noise_come_from_separate_streams():
    data, noise = step_generators(0, 7, torch.device("cpu"))
    again, _ = step_generators(0, 7, torch.device("cpu"))
    first = torch.rand(64, generator=data)
    assert not torch.equal(first, torch.rand(64, generator=noise))  # they were equal: one seed for both
    assert torch.equal(first, torch.rand(64, generator=again))  # a step's draws depend on the seed and step alone


def test_the_largest_seeds_give_step_streams_and_a_device_may_be_a_torch_device():
    """seed * 1,000,003 + step passed 2**64 for seeds above about 1.8e13 (the CLI takes up to 2**63 - 1), which
    manual_seed refuses; below 2**64 the streams are as before. TrainConfig takes torch.device('cpu') as 'cpu' (the
    optimizer read it as text, and the state file records it as JSON)."""
    big = 2**63 - 1
    data, _ = step_generators(big, 3, torch.device("cpu"))
    same, _ = step_generators(big, 3 + 2**64, torch.device("cpu"))  # the same number modulo 2**64
    assert torch.equal(torch.rand(8, generator=data), torch.rand(8, generator=same))
    small, _ = step_generators(5, 3, torch.device("cpu"))
    assert torch.equal(torch.rand(8, generator=small),
                       torch.rand(8, generator=torch.Generator().manual_seed(5 * 1_000_003 + 3)))
    cfg = TrainConfig(device=torch.device("cpu"))
    assert cfg.device == "cpu" and json.dumps(cfg.device) == '"cpu"'
    make_optimizer(new_model(CFG), cfg)  # read the device as text


def test_an_extended_run_records_each_schedule_once_and_reads_checkpoints_from_before_plans(tmp_path):
    """`plans` feed the model card's note that the command alone does not reproduce an extended run."""
    cfg = TrainConfig(steps=3, batch_size=4, warmup_steps=1, checkpoint_every=10, log_every=10)
    out = tmp_path / "run"
    assert train(new_model(CFG, seed=0), copy_batch, cfg, out, progress=False)["plans"] == [[0, 3, None]]
    state = out / "checkpoint" / "training_state.json"
    written = json.loads(state.read_text())
    del written["plans"]  # as a checkpoint of an earlier version wrote it
    state.write_text(json.dumps(written))
    longer = TrainConfig(**{**cfg.__dict__, "steps": 5})
    assert train(new_model(CFG, seed=0), copy_batch, longer, out, progress=False)["plans"] == \
        [[0, 3, None], [3, 5, None]]
    budget = TrainConfig(**{**longer.__dict__, "time_budget_s": 100.0})  # a call that runs no step plans nothing
    assert train(new_model(CFG, seed=0), copy_batch, budget, out, progress=False)["plans"] == \
        [[0, 3, None], [3, 5, None]]


def test_resume_survives_a_save_interrupted_mid_swap(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=3, log_every=3)
    model = new_model(CFG, seed=0)
    train(model, copy_batch, cfg, tmp_path, progress=False, stop_after=3)
    ckpt = tmp_path / "checkpoint"
    ckpt.rename(tmp_path / "checkpoint.old")  # as if the process died between the two renames
    (tmp_path / "checkpoint.tmp").mkdir()  # and left a half-written new one
    summary = train(new_model(CFG, seed=5), copy_batch, cfg, tmp_path, progress=False)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
    assert json.loads((ckpt / "training_state.json").read_text())["step"] == 6
    assert not (tmp_path / "checkpoint.old").exists() and not (tmp_path / "checkpoint.tmp").exists()


def test_diffusion_only_loss_encodes_just_the_prompt():
    model = new_model(CFG, seed=0)
    loss, parts = diffusion_loss(model, copy_batch(0, torch.Generator().manual_seed(1)),
                                 torch.Generator().manual_seed(2), ar_weight=0.0)
    assert parts["ar_loss"] == 0.0 and abs(parts["loss"] - parts["canvas_loss"]) < 1e-6
    loss.backward()
    assert model.embed_tokens.weight.grad.abs().sum() > 0


def test_solve_train_writes_a_usable_model_whose_card_command_reproduces_it(tmp_path):
    """`solve train` end to end: the model directory loads in the graph solver, and the command its card records
    retrains the same weights bit for bit."""
    import shlex

    import networkx as nx
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from diffsolve.solvers import GraphSolver
    from diffsolve.solvers.cli import app

    threads = str(torch.get_num_threads())  # the command sets torch's threads for this process
    first = tmp_path / "first"
    args = ["train", "graphs", "--out", str(first), "--steps", "3", "--batch-size", "4", "--threads", threads]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    model_dir = first / "model"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "README.md"} <= {p.name for p in model_dir.iterdir()}
    assert json.loads(result.stdout)["steps"] == 3  # log lines go to stderr, the summary alone to stdout
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == json.loads((model_dir / "config.json").read_text())["canvas_length"]

    card = (model_dir / "README.md").read_text()
    command = shlex.split(card.split("```")[1].strip())
    assert command[:3] == ["solve", "train", "graphs"]
    assert f"Run with {source_description()}." in card  # the code that made it: a commit in a checkout
    second = tmp_path / "second"
    command[command.index("--out") + 1] = str(second)
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    before, after = load_file(model_dir / "model.safetensors"), load_file(second / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)

    solver = GraphSolver.from_pretrained(model_dir)
    coloring = solver.color(nx.cycle_graph(7), k=3)
    assert coloring.verified and coloring.num_colors == 3


def test_deepened_copies_start_as_identity_and_then_learn(tmp_path):
    from diffsolve.core.training import deepen

    model = new_model(CFG, seed=0)
    deeper = deepen(model, 2)
    batch = copy_batch(0, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model.encode_logits(batch.prompt)[1], deeper.encode_logits(batch.prompt)[1])
    copy = deeper.layers[1]
    assert copy.post_feedforward_layernorm.weight.abs().sum() == 0
    assert torch.equal(copy.self_attn.q_proj.weight, model.layers[0].self_attn.q_proj.weight)

    cfg = TrainConfig(steps=5, batch_size=16, lr=1e-2, warmup_steps=1, weight_decay=0.0)  # only gradients move it
    train(deeper, copy_batch, cfg, tmp_path, progress=False)
    assert copy.post_feedforward_layernorm.weight.abs().sum() > 0  # the copies' output norms grow from zero
    assert not torch.equal(copy.self_attn.q_proj.weight, model.layers[0].self_attn.q_proj.weight)


def test_compiled_training_follows_eager_training(tmp_path):
    """`TrainConfig.compile` (torch.compile of both passes) takes the same steps as eager training: the same
    losses, step by step, up to rounding."""
    import shutil
    import warnings

    cfg = dict(steps=4, batch_size=16, lr=1e-2, warmup_steps=1, log_every=1)
    losses = {}
    for name, compile in (("eager", False), ("compiled", True)):
        model = new_model(CFG, seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(model, copy_batch, TrainConfig(**cfg, compile=compile), tmp_path / name, progress=False)
        fell_back = any("torch.compile failed" in str(w.message) for w in caught)
        assert fell_back == (compile and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")))
        assert not model.is_compiled  # eager again for sampling
        log = (tmp_path / name / "train_log.jsonl").read_text().splitlines()
        losses[name] = torch.tensor([json.loads(line)["loss"] for line in log])
    assert len(losses["compiled"]) == 4
    assert torch.allclose(losses["compiled"], losses["eager"], rtol=1e-3)
    assert losses["eager"][-1] < losses["eager"][0]


def test_a_run_that_fails_leaves_the_model_eager_and_in_eval_mode(tmp_path):
    """A data source that fails (or any error) ended training with the model still compiled and in train mode,
    so sampling afterwards recompiled for every new shape."""
    def failing(step, generator):
        raise OSError("the data disk went away")

    model = new_model(CFG, seed=0)
    with pytest.raises(OSError, match="data disk"):
        train(model, failing, TrainConfig(steps=2, batch_size=4, compile=True), tmp_path, progress=False)
    assert not model.is_compiled and not model.training


def test_a_second_thread_is_refused_a_run_directory_another_thread_holds(tmp_path):
    """The run lock is re-entrant within a thread (the CLI holds it around train) but kept another thread of the
    same process out no better than it did the first: two threads trained into one directory."""
    import threading

    from diffsolve.core.training import RunLock

    seen = []
    with RunLock(tmp_path), RunLock(tmp_path):  # the same thread again: fine
        thread = threading.Thread(target=lambda: seen.append(_refusal(lambda: RunLock(tmp_path).acquire())))
        thread.start()
        thread.join()
    assert seen == ["another thread of this process is training in this directory"]
    RunLock(tmp_path).acquire().release()  # free again once released


def _refusal(call) -> str | None:
    try:
        call()
    except ResumeError as exc:
        return str(exc).split(": ", 1)[1]
    return None


def test_ctrl_c_stops_after_the_step_under_way_with_a_checkpoint_and_resumes_exactly(tmp_path):
    cfg = TrainConfig(steps=30, batch_size=16, lr=1e-2, warmup_steps=5, checkpoint_every=20, log_every=10)
    straight = new_model(CFG, seed=0)
    train(straight, copy_batch, cfg, tmp_path / "straight", progress=False)

    def interrupted_batch(step: int, g: torch.Generator) -> Batch:
        if step == 13:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would, while step 13 is under way
        return copy_batch(step, g)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        train(new_model(CFG, seed=0), interrupted_batch, cfg, tmp_path / "split", progress=False)
    assert stop.value.step == 14 and stop.value.checkpoint == tmp_path / "split" / "checkpoint"
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C behaves as before once training is over
    assert json.loads((tmp_path / "split" / "checkpoint" / "training_state.json").read_text())["step"] == 14
    logged = (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [10, 14]  # the steps after the last log line too
    resumed = new_model(CFG, seed=99)
    assert train(resumed, copy_batch, cfg, tmp_path / "split", progress=False)["resumed_from"] == 14
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_step_that_fails_after_ctrl_c_stops_as_an_interrupt_with_a_checkpoint(tmp_path, monkeypatch):
    """Ctrl-C reaches torch.compile's worker processes too, and a kernel they left half-written fails to load:
    that failure, once Ctrl-C was asked, is the interrupt (exit 130, resumable), not a crash (exit 1)."""
    from diffsolve.core import training

    cfg = TrainConfig(steps=30, batch_size=16, lr=1e-2, warmup_steps=5, checkpoint_every=20, log_every=10)
    step_once = training.train_step

    def compiling_step(model, optimizer, batch, generator, cfg, calls=[]):
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("main.so: file too short")  # as inductor's half-written kernel
        return step_once(model, optimizer, batch, generator, cfg)

    monkeypatch.setattr(training, "train_step", compiling_step)
    with pytest.raises(TrainingInterrupted) as stop:
        train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path / "run", progress=False)
    assert stop.value.step == 3
    assert json.loads((tmp_path / "run" / "checkpoint" / "training_state.json").read_text())["step"] == 3

    def broken_step(*args):
        raise RuntimeError("main.so: file too short")

    monkeypatch.setattr(training, "train_step", broken_step)  # without Ctrl-C a failing step is the error it is
    with pytest.raises(RuntimeError, match="file too short"):
        train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path / "other", progress=False)


def test_a_second_ctrl_c_stops_training_at_once(tmp_path):
    cfg = TrainConfig(steps=30, batch_size=16, lr=1e-2, warmup_steps=5, checkpoint_every=20, log_every=10)

    def impatient_batch(step: int, g: torch.Generator) -> Batch:
        if step == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return copy_batch(step, g)

    with pytest.raises(KeyboardInterrupt) as stop:
        train(new_model(CFG, seed=0), impatient_batch, cfg, tmp_path / "run", progress=False)
    assert not isinstance(stop.value, TrainingInterrupted)
    assert not (tmp_path / "run" / "checkpoint").exists()


def _npz_declaring(path, declared_shape):
    """An .npz whose two uint8 arrays' headers declare `declared_shape` though each stores 81 bytes."""
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": declared_shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("puzzles", "solutions"):
            archive.writestr(f"{name}.npy", header.getvalue() + bytes(81))


@pytest.mark.parametrize("declared, expected", [
    ((10**12, 80), "arrays shaped puzzles [1000000000000, 80], solutions [1000000000000, 80]; expected puzzles "
                   "[N, 81], solutions [N, 81] with one N"),
    ((10**12, 81), "puzzles, solutions: the header declares more data than the archive holds (cut short or damaged)"),
    ((5, 81), "puzzles, solutions: the header declares more data than the archive holds (cut short or damaged)"),
])
def test_a_training_set_is_judged_by_its_headers_before_its_arrays_are_read(tmp_path, declared, expected):
    """Before, numpy allocated what the header declared (a 10**12-row array: MemoryError) before any check."""
    from diffsolve.core.training import cached_training_set

    path = tmp_path / "lying.npz"
    _npz_declaring(path, declared)
    with pytest.raises(ValueError) as refused:
        cached_training_set(path, dict, {}, {"puzzles": (81,), "solutions": (81,)}, check=False)
    assert str(refused.value) == f"{path}: {expected}"


def test_a_training_set_must_hold_every_array_of_its_layout_and_only_numbers(tmp_path):
    import numpy as np

    from diffsolve.core.training import cached_training_set

    layout = {"puzzles": (81,), "solutions": (81,)}
    path = tmp_path / "partial.npz"
    np.savez(path, puzzles=np.zeros((5, 81), np.uint8))
    with pytest.raises(ValueError, match="holds puzzles; a training set needs puzzles, solutions"):
        cached_training_set(path, dict, {}, layout, check=False)
    np.savez(path, puzzles=np.zeros((5, 81), np.uint8), solutions=np.full((5, 81), "9"))
    with pytest.raises(ValueError, match=r"arrays of numbers expected, not solutions \(<U1\)"):
        cached_training_set(path, dict, {}, layout, check=False)
    np.savez(path, puzzles=np.zeros((5, 81), np.uint8), solutions=np.ones((4, 81), np.uint8))
    with pytest.raises(ValueError, match=r"puzzles \[5, 81\], solutions \[4, 81\]; .* with one N"):
        cached_training_set(path, dict, {}, layout, check=False)
    np.savez(path, puzzle=np.zeros((5, 81), np.uint8), solutions=np.ones((5, 81), np.uint8),
             **{"made_with:examples": np.int64(5)})
    with pytest.raises(ValueError, match=r"partial.npz: holds puzzle, solutions; a training set needs puzzles, "
                                         r"solutions$"):  # the misspelt name shown, the record not
        cached_training_set(path, dict, {}, layout, check=False)


def test_a_training_set_without_examples_or_with_nan_is_refused(tmp_path):
    import numpy as np

    from diffsolve.core.training import cached_training_set

    path, layout = tmp_path / "set.npz", {"smiles": (4,), "logp": ()}
    np.savez(path, smiles=np.zeros((0, 4), np.int16), logp=np.zeros(0))
    with pytest.raises(ValueError, match="set.npz: holds no examples"):  # was a crash in the first batch
        cached_training_set(path, dict, {}, layout, check=False)
    np.savez(path, smiles=np.zeros((2, 4), np.int16), logp=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="set.npz: logp holds NaN or infinite values"):  # was trained in a top bin
        cached_training_set(path, dict, {}, layout, check=False)


def test_an_array_stored_twice_is_refused(tmp_path):
    """As 'puzzles' and 'puzzles.npy': one header would be checked while numpy reads the other."""
    import io
    import zipfile

    import numpy as np

    from diffsolve.core.training import cached_training_set

    path = tmp_path / "twice.npz"
    np.savez(path, puzzles=np.zeros((5, 81), np.uint8), solutions=np.ones((5, 81), np.uint8))
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((5, 80), np.uint8))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("puzzles", buffer.getvalue())
    with pytest.raises(ValueError, match=r"twice.npz: holds puzzles twice$"):
        cached_training_set(path, dict, {}, {"puzzles": (81,), "solutions": (81,)}, check=False)


def test_a_training_set_may_hold_other_members_which_are_left_unread(tmp_path):
    """A note, a text member or another array beside the set's own arrays: read before, and still."""
    import zipfile

    import numpy as np

    from diffsolve.core.training import cached_training_set

    path = tmp_path / "annotated.npz"
    np.savez_compressed(path, puzzles=np.zeros((5, 81), np.uint8), solutions=np.ones((5, 81), np.uint8),
                        source=np.array(["generated by a script of ours"]), weights=np.ones(3, np.complex64))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("README.txt", "how these puzzles were made")
    arrays = cached_training_set(path, dict, {}, {"puzzles": (81,), "solutions": (81,)}, check=False)
    assert set(arrays) == {"puzzles", "solutions"} and arrays["solutions"].sum() == 405


@pytest.mark.parametrize("damage", ["compression method 99", "encrypted", "broken lzma"])
def test_an_archive_zipfile_cannot_read_is_named_as_such(tmp_path, damage):
    """Before, these escaped as NotImplementedError, RuntimeError and LZMAError tracebacks."""
    import io
    import struct
    import zipfile

    import numpy as np

    from diffsolve.core.training import cached_training_set

    def array_bytes(array):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array)
        return buffer.getvalue()

    path = tmp_path / "damaged.npz"
    method = zipfile.ZIP_LZMA if damage == "broken lzma" else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("puzzles.npy", array_bytes(np.zeros((5, 81), np.uint8)))
        archive.writestr("solutions.npy", array_bytes(np.ones((5, 81), np.uint8)))
    raw = bytearray(path.read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    if damage == "compression method 99":
        raw[local + 8:local + 10] = raw[central + 10:central + 12] = struct.pack("<H", 99)
    elif damage == "encrypted":
        raw[local + 6] |= 1
        raw[central + 8] |= 1
    else:
        start = local + 30 + sum(struct.unpack("<HH", raw[local + 26:local + 30]))
        raw[start + 9:start + 40] = bytes(b ^ 0x5A for b in raw[start + 9:start + 40])
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="not a readable .npz archive of arrays"):
        cached_training_set(path, dict, {}, {"puzzles": (81,), "solutions": (81,)}, check=False)


@pytest.mark.parametrize("field, value, message", [
    ("checkpoint_every", 0, "checkpoint_every must be at least 1"),  # was a ZeroDivisionError after the first step
    ("log_every", 0, "log_every must be at least 1"),
    ("steps", -1, "steps must be at least 1"),  # was a run of -1 steps
    ("warmup_steps", -5, "warmup_steps must be at least 0"),
    ("eps", 1.5, "eps must be a finite number above 0 and at most 1"),
    ("self_conditioning_prob", 2.0, "self_conditioning_prob must be a finite number from 0 to 1"),
    ("lr", float("nan"), "lr must be a finite number above 0"),
    ("batch_size", 2.0, "batch_size must be a whole number"),
])
def test_a_training_config_with_a_bad_value_is_refused_before_any_step(field, value, message):
    with pytest.raises((TypeError, ValueError), match=message):
        TrainConfig(**{field: value})


def test_resuming_a_checkpoint_whose_contents_are_damaged_is_refused_by_name(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2, log_every=1)
    longer = TrainConfig(**{**cfg.__dict__, "steps": 4})
    train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False)
    state_file = tmp_path / "checkpoint" / "training_state.safetensors"
    state = load_file(str(state_file))
    save_file({**state, "0.exp_avg": state["0.exp_avg"][:1]}, str(state_file))  # was a broadcast RuntimeError
    with pytest.raises(ResumeError, match=r"training_state.safetensors: 0.exp_avg has shape \[1, 32\], not the "
                                          r"weight's \[16, 32\], the checkpoint is damaged; delete it"):
        train(new_model(CFG, seed=0), copy_batch, longer, tmp_path, progress=False)
    save_file({**state, "1.exp_avg_sq": state["1.exp_avg_sq"] * math.nan}, str(state_file))
    with pytest.raises(ResumeError, match="1.exp_avg_sq holds inf or NaN"):
        train(new_model(CFG, seed=0), copy_batch, longer, tmp_path, progress=False)
    save_file(state, str(state_file))
    weights_file = tmp_path / "checkpoint" / "model.safetensors"
    weights = load_file(str(weights_file))
    name = next(iter(weights))
    save_file({**weights, name: weights[name] * math.nan}, str(weights_file), metadata={"format": "pt"})
    with pytest.raises(ResumeError, match=r"hold inf or NaN.*; delete .*checkpoint to start the run over"):
        train(new_model(CFG, seed=0), copy_batch, longer, tmp_path, progress=False)


def test_a_resumed_run_drops_the_log_lines_of_steps_it_runs_again(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=3, log_every=1)
    train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False, stop_after=3)
    log = tmp_path / "train_log.jsonl"
    with log.open("a") as f:  # killed after logging steps 4 and 5, before their checkpoint at step 6, garbled
        f.write('{"step": 4, "loss": 1.0}\n\x00\x00{"step": 5}\n{"step": "5"}\n{"step": 5, "loss": 1.0}\n'
                '{"step": 6, "lo')
    train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert json.loads(log.read_text().splitlines()[3])["loss"] != 1.0  # the run's own line, not the killed one's


def test_a_stop_asked_while_a_log_line_is_written_still_checkpoints_that_step(tmp_path, monkeypatch):
    class SlowStderr:  # SIGTERM arrives while the third log line is being written (a stalled pipe, say)
        lines = 0

        def write(self, text):
            if text.strip():
                SlowStderr.lines += 1
                if SlowStderr.lines == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)  # the handler runs here
            return len(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", SlowStderr())
    cfg = TrainConfig(steps=100, batch_size=4, warmup_steps=1, checkpoint_every=1000, log_every=1)
    with pytest.raises(TrainingInterrupted, match="stopped after step 3, checkpointed"):
        train(new_model(CFG, seed=0), copy_batch, cfg, tmp_path, progress=False)
    assert json.loads((find_checkpoint(tmp_path / "checkpoint") / "training_state.json").read_text())["step"] == 3
