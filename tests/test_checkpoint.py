"""Checkpoint loading and saving: layouts, the HF cache, and the errors a user sees."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffsolve.core import CheckpointError, ConfigError, ModelConfig, load_model, new_model
from diffsolve.core.config import TINY_VISION_CONFIG

TEXT = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, num_experts=4, top_k_experts=2, moe_intermediate_size=8,
            layer_types=["sliding_attention", "full_attention"], sliding_window=4, global_head_dim=16)


def tiny(canvas_length=6, **text):
    return ModelConfig.from_hf_dict({"model_type": "diffusion_gemma", "canvas_length": canvas_length,
                                     "text_config": {**TEXT, **text}})


@pytest.fixture
def saved(tmp_path):
    model = new_model(tiny(), seed=1)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def _logits(model):
    g = torch.Generator().manual_seed(0)
    prompt, canvas = torch.randint(0, 40, (2, 7), generator=g), torch.randint(0, 40, (2, 6), generator=g)
    with torch.no_grad():
        return model.denoise(canvas, model.encode(prompt))


def test_a_loaded_model_and_a_solver_holding_one_pickle(saved):
    """Process pools and workflow engines pickle what they hand to workers (a lambda inside the model did not
    pickle). Only `pickle.dumps` runs here: the project never unpickles (checkpoints are safetensors only). A copy
    made through the same reduce protocol (`copy.deepcopy`) computes the same logits."""
    import copy
    import pickle

    from diffsolve.solvers import GraphSolver

    _, path = saved
    model = load_model(path)
    assert len(pickle.dumps(model)) > sum(p.numel() for p in model.parameters()) * 4  # the weights go along
    torch.testing.assert_close(_logits(copy.deepcopy(model)), _logits(model))
    solver = GraphSolver.from_pretrained(seed=3)
    assert len(pickle.dumps(solver)) > 0
    assert copy.deepcopy(solver).seed == 3


def test_round_trip_is_exact(saved):
    model, path = saved
    assert sorted(os.listdir(path)) == ["config.json", "generation_config.json", "model.safetensors"]
    assert torch.equal(_logits(model), _logits(load_model(path)))
    config = json.loads((path / "config.json").read_text())
    assert config["text_config"]["per_layer_config"] == {"1": {"head_dim": 16}}


def test_sharded_checkpoint(saved, tmp_path_factory):
    model, _ = saved
    out = tmp_path_factory.mktemp("sharded")
    model.save_pretrained(out, max_shard_bytes=4096)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (out / "model.safetensors").exists()
    assert torch.equal(_logits(model), _logits(load_model(out)))


def test_saving_again_replaces_the_shards_as_a_set(saved, tmp_path_factory):
    model, _ = saved
    out = tmp_path_factory.mktemp("resharded")
    model.save_pretrained(out, max_shard_bytes=4096)
    many = set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())
    model.save_pretrained(out, max_shard_bytes=3 * 4096)  # fewer shards under other names: the old ones go
    weights = {p.name for p in out.glob("*.safetensors")}
    assert weights == set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert len(weights) < len(many) and not weights & many
    assert torch.equal(_logits(model), _logits(load_model(out)))
    model.save_pretrained(out)  # one file: no index and no shards left
    assert sorted(p.name for p in out.iterdir() if "safetensors" in p.name) == ["model.safetensors"]
    assert torch.equal(_logits(model), _logits(load_model(out)))


def test_dtype_and_device(saved):
    _, path = saved
    model = load_model(path, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert _logits(model).dtype == torch.float32
    assert {p.dtype for p in load_model(path, dtype="Float16").parameters()} == {torch.float16}  # by name
    with pytest.raises(ValueError, match="dtype: expected 'auto', torch.float32.*its name: float32, bfloat16, "
                                         "float16, float64\\), got 'half-ish'"):
        load_model(path, dtype="half-ish")


def test_dtype_auto_is_the_one_config_json_names(saved, tmp_path):
    model, path = saved
    half = load_model(path, dtype=torch.bfloat16)
    half.save_pretrained(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert {p.dtype for p in load_model(tmp_path / "bf16").parameters()} == {torch.bfloat16}  # as transformers
    assert {p.dtype for p in load_model(tmp_path / "bf16", dtype=torch.float32).parameters()} == {torch.float32}
    assert {p.dtype for p in load_model(path).parameters()} == {torch.float32}
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    config["dtype"] = "int8"
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: dtype 'int8' is not one the model computes in"):
        load_model(tmp_path / "bf16")
    (tmp_path / "bf16" / "config.json").write_bytes(b'{"dtype": "\xff"}')
    with pytest.raises(CheckpointError, match="config.json: cannot be read"):
        load_model(tmp_path / "bf16")


def _rewrite(path, edit):
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def _edit_generation_config(path, edit):
    config = json.loads((path / "generation_config.json").read_text())
    edit(config)
    (path / "generation_config.json").write_text(json.dumps(config))


def test_strict_loading_lists_every_problem(saved):
    _, path = saved

    def edit(t):
        del t["model.decoder.layers.0.router.scale"]
        t["model.decoder.layers.0.bogus.weight"] = torch.zeros(2)
        t["model.decoder.norm.weight"] = torch.zeros(3)

    _rewrite(path, edit)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    message = str(err.value)
    assert "1 missing: model.decoder.layers.0.router.scale" in message
    assert "1 unexpected: model.decoder.layers.0.bogus.weight" in message
    assert "model.decoder.norm.weight: checkpoint (3,), config expects (16,)" in message


def test_vision_tensors_are_skipped_with_one_info_line(saved, caplog):
    model, path = saved
    _rewrite(path, lambda t: t.update({"model.encoder.vision_tower.patch.weight": torch.zeros(3, 3),
                                       "model.encoder.embed_vision.embedding_projection.weight": torch.zeros(2)}))
    with caplog.at_level(logging.INFO, logger="diffsolve.core.checkpoint"):
        loaded = load_model(path)
    assert [r.message for r in caplog.records] == ["skipped 2 vision-tower tensors (the vision path is not modelled)"]
    assert torch.equal(_logits(model), _logits(loaded))


def test_encoder_named_shared_weights_are_accepted(saved):
    """Checkpoints may name shared weights from the encoder side and carry a separate lm_head."""
    model, path = saved

    def edit(t):
        t["model.encoder.language_model.norm.weight"] = t.pop("model.decoder.norm.weight")
        t["lm_head.weight"] = t["model.decoder.embed_tokens.weight"].clone()

    _rewrite(path, edit)
    assert torch.equal(_logits(model), _logits(load_model(path)))


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["text_config"].pop("hidden_size"), "hidden_size"),
    (lambda c: c["text_config"].update(layer_types=["full_attention"]), "layer_types"),
    (lambda c: c["text_config"].update(num_attention_heads=3, num_key_value_heads=2), "num_attention_heads"),
    (lambda c: c["text_config"].update(top_k_experts=9), "top_k_experts"),
    (lambda c: c["text_config"]["rope_parameters"]["full_attention"].update(rope_type="yarn"), "rope_parameters"),
    (lambda c: c.update(model_type="gemma3"), "model_type"),
    (lambda c: c.pop("text_config"), "text_config"),
    (lambda c: c["text_config"].update(num_hidden_layers="2"), "num_hidden_layers"),
    (lambda c: c["text_config"].update(num_key_value_heads=0), "num_key_value_heads"),
    (lambda c: c["text_config"].update(rms_norm_eps=None), "rms_norm_eps"),
    (lambda c: c["text_config"].update(final_logit_softcapping=None), "final_logit_softcapping"),
    (lambda c: c["text_config"].update(final_logit_softcapping=-1.0), "final_logit_softcapping"),
    (lambda c: c["text_config"].update(layer_types="full_attention"), "layer_types: must be a list"),
    (lambda c: c["text_config"]["per_layer_config"]["1"].update(head_dim=16.5),
     "per_layer_config: layer 1: head_dim must be an integer"),
    (lambda c: c.update(canvas_length=0), "config.json: canvas_length: must be a positive integer, got 0"),
])
def test_config_errors_name_the_field(saved, edit, field):
    """A checkpoint whose config.json no model can use is an unusable checkpoint: CheckpointError, as the README
    promises (it was ConfigError, which `except CheckpointError` and `solve train --init` missed)."""
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert field in str(err.value) and f"{path / 'config.json'}: " in str(err.value)


def _shipped_copy(folder: Path, edit=None) -> Path:
    """A copy of the shipped sorting model at `folder`, its config.json's text_config changed by `edit`."""
    import shutil

    from diffsolve.solvers.checkpoints import default_checkpoint

    shutil.copytree(default_checkpoint("sorting"), folder)
    if edit is not None:
        config = json.loads((folder / "config.json").read_text())
        edit(config["text_config"])
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_bad_config_is_a_checkpoint_error_to_every_way_of_loading(tmp_path):
    """`except CheckpointError` catches it from each loader, and `solve train --init` says it in one line."""
    from diffsolve.core import DiffusionGemma
    from diffsolve.solvers import SudokuSolver

    bad = _shipped_copy(tmp_path / "bad", lambda text: text.update(num_attention_heads=3, num_key_value_heads=2))
    problem = rf"{bad / 'config.json'}: text_config.num_attention_heads: 3 is not a multiple of layer 0's 2"
    for load in (load_model, DiffusionGemma.from_pretrained, SudokuSolver.from_pretrained):
        with pytest.raises(CheckpointError, match=problem):
            load(bad)
    solve = Path(sys.executable).parent / "solve"
    done = subprocess.run([str(solve), "train", "sorting", "--init", str(bad), "--out", str(tmp_path / "run"),
                           "--steps", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "text_config.num_attention_heads: 3 is not a multiple" in done.stderr


def test_a_config_built_in_code_stays_a_config_error():
    """Only a checkpoint's config.json is the checkpoint's fault; values passed in code are the caller's."""
    with pytest.raises(ConfigError, match="canvas_length: must be a positive integer, got 0") as err:
        tiny(canvas_length=0)
    assert not isinstance(err.value, CheckpointError)


def test_a_training_run_folder_points_to_its_model(tmp_path):
    run = tmp_path / "runs" / "x"
    _shipped_copy(run / "model")
    _shipped_copy(run / "checkpoint")
    with pytest.raises(CheckpointError, match=rf"{run}: no config.json; a training run folder\? load {run / 'model'} "
                                              r"\(the finished model\)$"):
        load_model(run)
    (run / "model" / "config.json").unlink()  # a run cut short before its model was written
    with pytest.raises(CheckpointError, match=rf"load {run / 'checkpoint'} \(the last training checkpoint\)$"):
        load_model(run)
    with pytest.raises(CheckpointError, match=rf"{run / 'model'}: no config.json$"):  # no hint where none fits
        load_model(run / "model")


def test_a_config_that_is_not_an_object_is_named(saved):
    _, path = saved
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json: expected a JSON object, got list"):
        load_model(path)


def test_final_logit_softcapping_survives_a_save(saved, tmp_path):
    _, path = saved
    model = new_model(tiny(final_logit_softcapping=12.5), seed=1)
    model.save_pretrained(tmp_path / "capped")
    assert load_model(tmp_path / "capped").config.final_logit_softcapping == 12.5


@pytest.mark.parametrize("name, text, message", [
    ("generation_config.json", "{bad", r"generation_config.json: invalid JSON at line 1"),
    ("tokenizer.json", "{bad", r"tokenizer.json: not a readable tokenizer.json"),
    ("model.safetensors.index.json", "[]", r"index.json: not a usable shard index .*download the checkpoint again"),
])
def test_damaged_side_files_are_named(saved, name, text, message):
    _, path = saved
    if name.endswith("index.json"):  # read only where there is no single weights file (as in transformers)
        (path / "model.safetensors").unlink()
    (path / name).write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


@pytest.mark.parametrize("dtype, stored", [(torch.int32, "I32"), (torch.float8_e4m3fn, "F8_E4M3")])
def test_weights_of_a_dtype_the_model_cannot_compute_in_are_refused_by_name(saved, dtype, stored):
    """Whole numbers are not cast to weights silently; float8 cannot even be checked for inf and NaN."""
    _, path = saved
    tensors = load_file(path / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"1 mis-shaped or mistyped: {name}: checkpoint dtype {stored}, "
                                              "expected one of F32, BF16, F16, F64"):
        load_model(path)


@pytest.mark.parametrize("shard", ["{elsewhere}/weights.safetensors", "../weights.safetensors",
                                   "sub/weights.safetensors"])
def test_an_index_naming_a_file_outside_the_folder_is_refused(saved, tmp_path_factory, shard):
    """A downloaded index must not make the loader (or the digest that acceptance files record) read a file
    elsewhere on the disk, even one that holds exactly the weights asked for."""
    from diffsolve.core import weights_digest

    _, path = saved
    shard = shard.format(elsewhere=tmp_path_factory.mktemp("elsewhere"))
    out = tmp_path_factory.mktemp("sharded") / "ckpt"
    out.mkdir()
    for name in ("config.json", "generation_config.json"):
        (out / name).write_text((path / name).read_text())
    target = Path(shard) if Path(shard).is_absolute() else out / shard
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((path / "model.safetensors").read_bytes())  # every weight, where the index points
    names = load_file(path / "model.safetensors")
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))
    for call in (load_model, weights_digest):
        with pytest.raises(CheckpointError, match=r"names shard file\(s\) outside the checkpoint folder: "):
            call(out)


def test_a_config_claiming_more_layers_than_the_weights_hold_is_refused_before_building(saved, monkeypatch):
    """10**8 layers would take minutes and gigabytes to describe: the count is checked before the config is read."""
    from diffsolve.core import checkpoint

    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["text_config"].update(num_hidden_layers=10**8, layer_types=None)
    (path / "config.json").write_text(json.dumps(config))

    def built_too_early(directory):
        raise AssertionError("the config was built before its layer count was checked")

    monkeypatch.setattr(checkpoint, "read_config", built_too_early)
    with pytest.raises(CheckpointError, match=r"num_hidden_layers 100000000, but the weights hold 2 layers"):
        load_model(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(model_type="gemma4"), "model_type: expected 'diffusion_gemma', got 'gemma4'"),
    (lambda c: c["text_config"].update(num_hidden_layers=-3), "num_hidden_layers: must be a positive integer"),
])
def test_another_model_or_a_bad_count_is_named_as_such_not_as_a_layer_mismatch(saved, edit, message):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_folder_with_a_broken_config_and_no_weights_is_named_by_its_config(tmp_path):
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"config.json: invalid JSON at line 1"):
        load_model(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["rope_parameters"]["sliding_attention"].update(rope_theta=float("nan")),
     r"sliding_attention.rope_theta must be a positive number, got nan"),
    (lambda t: t["rope_parameters"]["full_attention"].update(rope_theta=-1.0),
     r"full_attention.rope_theta must be a positive number, got -1.0"),
    (lambda t: t.update(max_position_embeddings=float("inf")), r"max_position_embeddings: must be a positive integer"),
    (lambda t: t.update(max_position_embeddings=4), r"max_position_embeddings: 4 is shorter than canvas_length 6"),
    (lambda t: t.update(head_dim=2**62), r"config.json: sizes no model can be built with \([^\n]*\)$"),  # no C++
    (lambda t: t.update(tie_word_embeddings="false"), r"tie_word_embeddings must be true or false, got 'false'"),
    (lambda t: t.update(eos_token_id="x"), r"eos_token_id: must be a token id below vocab_size 40 \(or a list"),
    (lambda t: t.update(pad_token_id=10**30), r"pad_token_id: must be a token id below vocab_size 40, got 1000"),
])
def test_config_values_that_would_fail_at_sampling_are_refused_when_loading(saved, edit, message):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    edit(config["text_config"])
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


@pytest.mark.parametrize("name", ["config.json", "generation_config.json"])
def test_json_nested_too_deeply_is_a_checkpoint_error(saved, name):
    _, path = saved
    (path / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=rf"{name}: "):
        load_model(path)


def test_atomic_writes_replace_a_link_or_with_follow_links_its_target(tmp_path):
    from diffsolve.core import write_atomically

    blob, link = tmp_path / "blob.json", tmp_path / "config.json"
    blob.write_text("shared")
    link.symlink_to(blob)  # as a Hugging Face snapshot links to a blob other revisions share
    write_atomically(link, lambda tmp: tmp.write_text("new"))
    assert not link.is_symlink() and link.read_text() == "new" and blob.read_text() == "shared"
    link.unlink()
    link.symlink_to(blob)
    write_atomically(link, lambda tmp: tmp.write_text("followed"), follow_links=True)  # a user's output file
    assert link.is_symlink() and blob.read_text() == "followed"
    write_atomically(Path(os.devnull), lambda path: path.write_text("gone"))  # not a regular file: written to
    assert Path(os.devnull).is_char_device() and sorted(p.name for p in tmp_path.iterdir()) == ["blob.json",
                                                                                                 "config.json"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    from diffsolve.core import write_atomically

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(tmp_path / "model.safetensors", fail)
    assert list(tmp_path.iterdir()) == []


def test_a_save_cut_short_is_refused_not_read_as_a_mix(saved, tmp_path):
    import shutil

    model, _ = saved
    model.save_pretrained(tmp_path / "a", max_shard_bytes=4096)
    other = load_model(tmp_path / "a")
    with torch.no_grad():
        next(other.parameters()).mul_(2)
    other.save_pretrained(tmp_path / "b", max_shard_bytes=4096)
    first = sorted(p.name for p in (tmp_path / "a").glob("model-*.safetensors"))[0]
    shutil.copy(tmp_path / "b" / first, tmp_path / "a" / first)  # as if the second save had stopped there
    with pytest.raises(CheckpointError, match=f"{first}: written by another save than .* names"):
        load_model(tmp_path / "a")
    model.save_pretrained(tmp_path / "a", max_shard_bytes=4096)  # saving again mends it
    assert torch.equal(_logits(model), _logits(load_model(tmp_path / "a")))


def test_unrelated_fields_are_ignored(saved):
    model, path = saved
    config = json.loads((path / "config.json").read_text())
    config.update(transformers_version="9.9", some_future_field={"x": 1})
    config["vision_config"] = {"model_type": "gemma4_vision", "hidden_size": 1152}
    (path / "config.json").write_text(json.dumps(config))
    loaded = load_model(path)
    assert torch.equal(_logits(model), _logits(loaded))
    loaded.save_pretrained(path / "again")  # without vision weights, so without the vision tower's config
    assert json.loads((path / "again" / "config.json").read_text())["vision_config"] == TINY_VISION_CONFIG


def test_global_head_dim_and_per_layer_config_agree():
    explicit = tiny(per_layer_config={"1": {"head_dim": 16, "num_key_value_heads": 1}})
    derived = tiny(num_global_key_value_heads=1)
    assert explicit.layers == derived.layers
    default = ModelConfig.from_hf_dict({"model_type": "diffusion_gemma", "text_config": {
        **{k: v for k, v in TEXT.items() if k != "global_head_dim"}}})
    assert default.layers[1].head_dim == 512 and default.layers[0].head_dim == 8


def test_a_damaged_weights_file_is_named_with_what_to_do(saved):
    _, path = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file .*download or save"):
        load_model(path)


def _set_first_weight(path, value: float) -> str:
    """Write `value` into the first element of the checkpoint's first tensor; returns that tensor's name."""
    name = sorted(load_file(str(path / "model.safetensors")))[0]
    _rewrite(path, lambda tensors: tensors[name].view(-1).__setitem__(0, value))
    return name


def test_weights_holding_nan_or_inf_are_refused_by_name(saved):
    _, path = saved
    name = _set_first_weight(path, float("nan"))
    with pytest.raises(CheckpointError, match=rf"1 weight tensor\(s\) hold inf or NaN.*{name}"):
        load_model(path)


def test_a_single_weights_file_wins_over_an_index_beside_it(saved, tmp_path_factory):
    """As in transformers: model.safetensors is read and the index beside it ignored, by the loader and by the
    digest that results record."""
    from diffsolve.core import weights_digest

    model, path = saved
    other, sharded = new_model(tiny(), seed=2), tmp_path_factory.mktemp("sharded")
    other.save_pretrained(sharded, max_shard_bytes=2_000)
    digest = weights_digest(path)
    for f in sharded.glob("model*"):
        (path / f.name).write_bytes(f.read_bytes())
    assert (path / "model.safetensors.index.json").is_file() and (path / "model.safetensors").is_file()
    assert torch.equal(_logits(load_model(path)), _logits(model)) and weights_digest(path) == digest


def test_a_shard_index_naming_non_files_is_refused(saved, tmp_path_factory):
    model, _ = saved
    sharded = tmp_path_factory.mktemp("sharded")
    model.save_pretrained(sharded, max_shard_bytes=2_000)
    index = sharded / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {name: 5 for name in data["weight_map"]}
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not a usable shard index .*weight_map values must be file names"):
        load_model(sharded)


def test_weights_too_large_for_the_requested_dtype_are_not_called_damaged(saved):
    _, path = saved
    name = _set_first_weight(path, 1e5)  # fine in float32, inf in float16
    assert load_model(path) is not None
    with pytest.raises(CheckpointError, match=rf"hold values torch.float16 cannot represent .*{name}"):
        load_model(path, dtype=torch.float16)
    with pytest.raises(ValueError, match="torch.float64 \\(or its name: .*\\), got torch.float8_e4m3fn"):
        load_model(path, dtype=torch.float8_e4m3fn)


@pytest.mark.parametrize("field, value, message", [
    ("stability_threshold", 1.5, "stability_threshold must be a whole number, got 1.5"),
    ("confidence_threshold", 0.0, "confidence_threshold must be a finite number above 0, got 0.0"),
    ("max_new_tokens", 2.0, "max_new_tokens must be a whole number, got 2.0"),
    ("eos_token_id", "1", "eos_token_id must be a token id or a list of them"),
    ("t_min", -0.1, "t_min must be a finite number at least 0, got -0.1"),
    ("t_min", 0.9, "need 0 <= t_min <= t_max"),
    ("t_max", float("inf"), "t_max must be a finite number above 0, got inf"),
    ("max_denoising_steps", 10**12, "max_denoising_steps must be below 2\\*\\*31"),
    ("eos_token_id", 10**30, "eos_token_id must be a token id"),
    ("stability_threshold", 10**30, "stability_threshold counts passes: it must be below 2\\*\\*31"),
])
def test_a_bad_sampler_setting_is_refused_at_load(saved, field, value, message):
    _, path = saved
    _edit_generation_config(path, lambda config: config.update({field: value}))
    with pytest.raises(CheckpointError, match=f"generation_config.json: not a usable generation config .*{message}"):
        load_model(path)


@pytest.mark.parametrize("field, value, message", [
    ("eos_token_id", [1, 40], "eos_token_id 40 is outside the vocabulary of 40 tokens"),
    ("pad_token_id", 10**4, "pad_token_id 10000 is outside the vocabulary of 40 tokens"),
])
def test_a_token_id_outside_the_vocabulary_is_refused_at_load_and_at_save(saved, tmp_path, field, value, message):
    """Not an index error deep in sampling; and what load refuses, save does not write."""
    from diffsolve.core import SamplingConfig

    model, path = saved
    _edit_generation_config(path, lambda config: config.update({field: value}))
    with pytest.raises(CheckpointError, match=f"generation_config.json: {message}"):
        load_model(path)
    model.generation_config = SamplingConfig(**{field: value})
    with pytest.raises(CheckpointError, match=f"generation_config.json: {message}"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [1, "0.1", True])
def test_an_entropy_bound_transformers_would_refuse_is_refused(saved, value):
    _, path = saved
    _edit_generation_config(path, lambda config: config["sampler_config"].update(entropy_bound=value))
    with pytest.raises(CheckpointError, match="entropy_bound must be written as a float"):
        load_model(path)


def test_numpy_settings_and_float64_weights_save_and_load(tmp_path):
    import numpy as np

    from diffsolve.core import SamplingConfig

    model = new_model(tiny(), seed=1, dtype=torch.float64)
    model.generation_config = SamplingConfig(max_denoising_steps=np.int64(8), t_min=np.float32(0.25),
                                             eos_token_id=[np.int64(1)])
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.dtype == torch.float64 and torch.equal(_logits(loaded), _logits(model))
    assert (loaded.generation_config.max_denoising_steps, loaded.generation_config.eos_token_id) == (8, [1])
    with pytest.raises(ValueError, match="eos_token_id must be a token id or a list of them"):
        SamplingConfig(eos_token_id=[])


def test_a_zero_temperature_throughout_is_refused():
    from diffsolve.core import SamplingConfig

    with pytest.raises(ValueError, match="t_max must be a finite number above 0, got 0.0"):
        SamplingConfig(t_min=0.0, t_max=0.0)


def test_a_zero_final_temperature_loads(saved):
    """t_min = 0 is valid (as in transformers): the last pass samples at (t_max - t_min) / passes, not 0."""
    _, path = saved
    _edit_generation_config(path, lambda config: config.update(t_min=0.0))
    assert load_model(path).generation_config.t_min == 0.0


def test_bad_locations(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model(tmp_path / "nope" / "deeper")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "diffusion_gemma", "text_config": TEXT}))
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_model(tmp_path)


def _cache_holding(path: Path, cache: Path, repo_id: str) -> None:
    """A Hugging Face cache in which `repo_id` is the checkpoint at `path`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in os.listdir(path):
        (snapshot / name).write_bytes((path / name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def _load_offline_from_a_cache_holding(path: Path, repo_id: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`load_model(repo_id)` in a child, offline, with a Hugging Face cache holding `path` as `repo_id`."""
    home = tmp_path / "hf_home"
    _cache_holding(path, home / "hub", repo_id)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", f"from diffsolve.core import load_model; load_model({repo_id!r})"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_hub_id_resolves_offline_from_the_hf_cache(saved, tmp_path_factory):
    model, path = saved
    cache = tmp_path_factory.mktemp("hf_cache")
    _cache_holding(path, cache, "acme/tiny-diffusion")
    expected = _logits(model)
    script = ("import torch, sys; from safetensors.torch import save_file; from diffsolve.core import load_model;"
              "torch.set_num_threads(int(sys.argv[2]));"  # as this process: another count may round otherwise
              "m = load_model('acme/tiny-diffusion'); g = torch.Generator().manual_seed(0);"
              "p = torch.randint(0, 40, (2, 7), generator=g); c = torch.randint(0, 40, (2, 6), generator=g);"
              "save_file({'logits': m.denoise(c, m.encode(p)).detach()}, sys.argv[1])")
    out = tmp_path_factory.mktemp("out") / "logits.safetensors"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script, str(out), str(torch.get_num_threads())], check=True, env=env,
                   timeout=120)
    assert torch.equal(load_file(str(out))["logits"], expected)
    missing = subprocess.run([sys.executable, "-c", "from diffsolve.core import load_model; load_model('acme/absent')"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "not in the Hugging Face cache" in missing.stderr
    assert "hf download acme/absent" in missing.stderr


def test_a_hub_id_cached_with_only_pickle_weights_says_so_offline(tmp_path):
    """As a local folder with the same files does: not 'only partly downloaded', and the pickle is never read."""
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "diffusion_gemma", "text_config": TEXT}))
    (pickled / "pytorch_model.bin").write_bytes(b"not a pickle: reading it would fail otherwise")
    with pytest.raises(CheckpointError, match=rf"{pickled}: only pickle weights found \(pytorch_model.bin\); "
                                              "diffsolve loads safetensors only"):
        load_model(pickled)
    done = _load_offline_from_a_cache_holding(pickled, "acme/pickled", tmp_path)
    assert done.returncode != 0 and "partly downloaded" not in done.stderr, done.stderr
    assert "CheckpointError: acme/pickled: only pickle weights found in the Hugging Face cache (" in done.stderr
    assert "models--acme--pickled/snapshots/" in done.stderr and "pytorch_model.bin); diffsolve loads safetensors " \
        "only" in done.stderr


def test_diffusion_gemma_from_pretrained_is_load_model():
    """One way to load, two spellings: the name Hugging Face users know takes load_model's arguments."""
    import inspect

    from diffsolve.core import DiffusionGemma
    from diffsolve.solvers.checkpoints import default_checkpoint

    path = default_checkpoint("sorting")
    assert inspect.signature(DiffusionGemma.from_pretrained).parameters == inspect.signature(load_model).parameters
    ours, theirs = DiffusionGemma.from_pretrained(path, dtype="bfloat16"), load_model(path, dtype="bfloat16")
    assert type(ours) is DiffusionGemma and ours.dtype == torch.bfloat16 and not ours.training
    assert ours.config == theirs.config and ours.source == theirs.source == path
    assert ours.tokenizer.to_str() == theirs.tokenizer.to_str() and ours.generation_config == theirs.generation_config
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(ours.state_dict()[name], weight) for name, weight in theirs.state_dict().items())


def test_training_from_a_hub_id_records_the_id_not_a_path_under_the_working_folder(tmp_path):
    from diffsolve.solvers.checkpoints import default_checkpoint

    cache = tmp_path / "hf_cache"
    _cache_holding(default_checkpoint("sorting"), cache, "acme/sort-demo")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    solve = Path(sys.executable).parent / "solve"
    done = subprocess.run([str(solve), "train", "sorting", "--init", "acme/sort-demo", "--out", str(tmp_path / "run"),
                           "--steps", "2", "--batch-size", "4", "--threads", "1"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    state = json.loads((tmp_path / "run" / "checkpoint" / "training_state.json").read_text())
    assert state["config"]["init"] == "acme/sort-demo"  # was {tmp_path}/acme/sort-demo, refused from another folder


def _stand_in_hub(status: int, code: str):
    """A local stand-in for the Hub's API that answers every request with `status` and this X-Error-Code, and the
    requests it saw."""
    import http.server
    import threading

    seen = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            seen.append(self.path)
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _load_in(folder: Path, repo_id: str, **env):
    script = f"from diffsolve.core import load_model; print(type(load_model({repo_id!r})).__name__)"
    environment = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", script], cwd=folder, env=environment, capture_output=True, text=True,
                          timeout=120)


def test_a_hub_id_that_could_be_a_mistyped_path_is_not_looked_up_on_the_hub(saved, tmp_path_factory):
    """'runs/sudoku' where runs/ exists but holds no sudoku: no request leaves the machine, though a cached copy is
    used (a google/ folder must not hide a downloaded google/... model). Elsewhere the same text is a hub id: the
    download is said on stderr, and a repository the Hub does not know is called that."""
    _, path = saved
    server, seen = _stand_in_hub(404, "RepoNotFound")
    cache = tmp_path_factory.mktemp("hf_cache")
    _cache_holding(path, cache, "runs/cached")
    env = dict(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", HF_HUB_CACHE=str(cache),
               HF_HUB_OFFLINE=None)
    here = tmp_path_factory.mktemp("project")
    (here / "runs").mkdir()
    mistyped = _load_in(here, "runs/sudoku", **env)
    assert mistyped.returncode != 0 and "Not looked up on the Hub: runs/ is a folder here" in mistyped.stderr
    cached = _load_in(here, "runs/cached", **env)
    assert cached.returncode == 0 and cached.stdout.strip() == "DiffusionGemma"
    assert seen == []
    elsewhere = _load_in(tmp_path_factory.mktemp("empty"), "runs/sudoku", **env)
    server.shutdown()
    assert seen, "the hub id was never looked up"
    assert "runs/sudoku: not in the Hugging Face cache; downloading it from the Hugging Face Hub" in elsewhere.stderr
    assert "no such model repository on the Hugging Face Hub" in elsewhere.stderr


def test_a_gated_repository_is_called_gated_and_offline_nothing_is_said_to_download(tmp_path_factory):
    server, seen = _stand_in_hub(403, "GatedRepo")
    env = dict(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
               HF_HUB_CACHE=str(tmp_path_factory.mktemp("hf_cache")), HF_HUB_OFFLINE=None)
    empty = tmp_path_factory.mktemp("empty")
    gated = _load_in(empty, "google/gated-model", **env)
    assert "google/gated-model: a gated repository on the Hugging Face Hub: accept its terms" in gated.stderr
    asked = len(seen)
    offline = _load_in(empty, "google/gated-model", **{**env, "HF_HUB_OFFLINE": "1"})
    server.shutdown()
    assert offline.returncode != 0 and "(offline mode: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)" in offline.stderr
    assert "downloading" not in offline.stderr and asked > 0 and len(seen) == asked
    (empty / "google").mkdir()  # offline too, a folder of the owner's name means a path may have been mistyped
    mistyped = _load_in(empty, "google/gated-model", HF_HUB_OFFLINE="1", HF_HUB_CACHE=env["HF_HUB_CACHE"])
    assert "Not looked up on the Hub: google/ is a folder here" in mistyped.stderr


def test_offline_mode_set_after_huggingface_hub_was_imported_is_kept(tmp_path):
    server, seen = _stand_in_hub(404, "RepoNotFound")
    script = ("import os, huggingface_hub.constants; from diffsolve.core import load_model\n"
              "os.environ['HF_HUB_OFFLINE'] = '1'\n"
              "load_model('acme/absent')")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
           "HF_HUB_CACHE": str(tmp_path / "cache")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    server.shutdown()
    assert "(offline mode: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)" in result.stderr and seen == []


def test_a_home_folder_of_an_unknown_user_is_no_such_directory():
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model("~no-such-user-here/model/x")


def test_settings_a_generation_config_cannot_hold_are_refused_before_anything_is_written(tmp_path, saved):
    from diffsolve.core import SamplingConfig

    model = new_model(tiny(), seed=1)
    for settings, problem in [(dict(t_min=2.0, t_max=2.0), "a constant temperature"),
                              (dict(stability_threshold=None), "stability_threshold=None"),
                              (dict(confidence_threshold=None), "confidence_threshold=None")]:
        model.generation_config = SamplingConfig(**settings)  # allowed in code
        with pytest.raises(ValueError, match=problem):  # was written: transformers could not load the first,
            model.save_pretrained(tmp_path / "out")     # and the second read back with adaptive stopping on
        assert not (tmp_path / "out").exists()
    _, path = saved
    _edit_generation_config(path, lambda config: config.update(t_min=config["t_max"]))
    with pytest.raises(CheckpointError, match="t_max must be greater than t_min"):
        load_model(path)


def test_a_task_vocabulary_is_saved_with_a_config_that_transformers_reads_as_written(saved, tmp_path):
    from transformers import AutoTokenizer

    from diffsolve.core.tokenizer import word_level_tokenizer

    model, _ = saved
    model.tokenizer = word_level_tokenizer(["3", "1", "2"])
    model.save_pretrained(tmp_path / "words")
    assert json.loads((tmp_path / "words" / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    assert AutoTokenizer.from_pretrained(tmp_path / "words")("3 1 2")["input_ids"] == [4, 5, 6]  # not <unk>s
    assert load_model(tmp_path / "words").tokenizer.encode("3 1 2").ids == [4, 5, 6]


def test_models_slash_name_is_the_shipped_checkpoint_from_any_folder(tmp_path, monkeypatch):
    """As after installing the wheel: no models/ folder here, yet the README's `models/sudoku` works, and a name
    not shipped is refused instead of being fetched from a Hub owner called 'models'."""
    monkeypatch.chdir(tmp_path)
    model = load_model("models/sort-demo/")
    assert Path(model.source).parent.name == "models" and (Path(model.source) / "model.safetensors").is_file()
    with pytest.raises(CheckpointError, match="models/nope: no such directory, nor a checkpoint shipped with "
                                              "diffsolve \\(graphs, molecules, sort-demo, sudoku"):
        load_model("models/nope")
    (tmp_path / "models").mkdir()  # a models/ folder here is a path, as before
    with pytest.raises(CheckpointError, match="mistyped path"):
        load_model("models/sort-demo")


def test_a_sharded_download_cut_short_in_the_cache_is_partial_not_a_missing_shard(saved, tmp_path):
    """The index arrives before 50 GB of shards: such a snapshot is 'only partly downloaded' (finished where the
    Hub can be asked; offline, `hf download` named), not returned as a checkpoint missing a shard."""
    model, _ = saved
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_bytes=20_000)
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").is_file()
    shards[-1].unlink()
    done = _load_offline_from_a_cache_holding(sharded, "acme/cut-short", tmp_path)
    assert done.returncode != 0 and "acme/cut-short: no such local directory, and only partly downloaded in the " \
        "Hugging Face cache (offline mode" in done.stderr and "hf download acme/cut-short" in done.stderr, done.stderr


def test_a_resave_keeps_the_wrappers_token_ids_and_the_tokenizers_companions(saved, tmp_path):
    """The released model's config.json names eos_token_id [1, 106] beside its text_config, and its tokenizer
    comes with tokenizer_config.json and a chat template: a load and save kept neither."""
    from tokenizers import Tokenizer, models

    _, path = saved
    source = tmp_path / "source"
    shutil.copytree(path, source)
    config = json.loads((source / "config.json").read_text())
    config["eos_token_id"] = [1, 7]
    (source / "config.json").write_text(json.dumps(config))
    Tokenizer(models.BPE(vocab={"<pad>": 0, "<eos>": 1, "<bos>": 2}, merges=[])).save(str(source / "tokenizer.json"))
    (source / "tokenizer_config.json").write_text('{"tokenizer_class": "GemmaTokenizer"}')
    (source / "chat_template.jinja").write_text("{{ messages }}")
    out = tmp_path / "out"
    load_model(source).save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == [1, 7]
    assert (out / "chat_template.jinja").read_text() == "{{ messages }}"
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"tokenizer_class": "GemmaTokenizer"}


def test_a_header_read_checks_the_layer_count_before_describing_the_layers(saved, monkeypatch):
    """A solver's constructor reads the header first: 10**7 layers took 80 s and 2 GB there, as load_model once did."""
    from diffsolve.core import checkpoint

    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["text_config"].update(num_hidden_layers=10**7, layer_types=None)
    (path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(checkpoint.ModelConfig, "from_hf_dict", lambda raw: pytest.fail("built before the check"))
    with pytest.raises(CheckpointError, match=r"num_hidden_layers 10,000,000, more than any model has"):
        checkpoint.read_header(path)


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "diffusion_gemma", "x": ' + "9" * 5000 + "}", r"config.json: unreadable JSON \(Exceeds the limit"),
    ('{"junk": "' + "a" * (16 * 2**20) + '"}', r"config.json: 16,777,2\d\d bytes, more than a checkpoint's JSON"),
])
def test_a_config_too_large_to_be_one_or_with_a_number_python_will_not_read_is_named(saved, text, message):
    _, path = saved
    (path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_second_copy_of_the_embedding_that_differs_is_refused_and_an_equal_one_loads(saved):
    """DiffusionGemma ties lm_head to the embedding: a file holding both must hold them equal (the first one read
    was kept before, so a different lm_head.weight silently became the embedding)."""
    _, path = saved
    weights = load_file(path / "model.safetensors")
    embedding = weights["model.decoder.embed_tokens.weight"]
    save_file({**weights, "lm_head.weight": embedding.clone()}, path / "model.safetensors", metadata={"format": "pt"})
    torch.testing.assert_close(load_model(path).embed_tokens.weight, embedding)
    embedding[0, 0] = float("nan")  # damaged in both copies alike: called damaged, not two copies that differ
    save_file({**weights, "lm_head.weight": embedding.clone()}, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"hold inf or NaN, the checkpoint is damaged"):
        load_model(path)
    embedding[0, 0] = 0.0
    save_file({**weights, "lm_head.weight": embedding + 1}, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError,
                       match=r"1 pair\(s\) of copies .*: model.decoder.embed_tokens.weight and lm_head.weight$"):
        load_model(path)


def test_files_that_are_folders_or_a_renamed_pickle_are_called_what_they_are(saved):
    _, path = saved
    weights = (path / "model.safetensors").read_bytes()
    (path / "tokenizer.json").unlink(missing_ok=True)  # a bare model saves none
    (path / "tokenizer.json").mkdir()
    with pytest.raises(CheckpointError, match=r"tokenizer.json: not a regular file"):
        load_model(path)
    (path / "tokenizer.json").rmdir()
    (path / "model.safetensors").unlink()
    (path / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a regular file \(a folder or a device\)"):
        load_model(path)
    (path / "model.safetensors").rmdir()
    (path / "model.safetensors").write_bytes(b"PK\x03\x04" + bytes(64))  # what torch.save writes: a zip
    with pytest.raises(CheckpointError, match=r"a PyTorch pickle under a safetensors name \(never unpickled"):
        load_model(path)
    header = b"\x80\x02" + bytes(6) + b'{"w": '  # a header of 640 bytes cut off: damaged, not a pickle
    (path / "model.safetensors").write_bytes(header)
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file"):
        load_model(path)
    (path / "model.safetensors").write_bytes(weights)
    (path / "generation_config.json").unlink(missing_ok=True)
    (path / "generation_config.json").mkdir()
    with pytest.raises(CheckpointError, match=r"generation_config.json: not a regular file"):
        load_model(path)


def test_a_header_needs_no_weights_and_a_protocol_3_pickle_is_named(saved, tmp_path):
    import pickle

    from diffsolve.core import read_header

    _, path = saved
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((path / "config.json").read_bytes())
    assert read_header(bare).config == load_model(path).config  # the weights are load_model's to read
    (path / "model.safetensors").write_bytes(pickle.dumps({"w": [0.0] * 8}, protocol=3))  # never unpickled here
    with pytest.raises(CheckpointError, match=r"a PyTorch pickle under a safetensors name"):
        load_model(path)


def test_an_index_naming_no_shard_and_a_hub_id_of_dots_are_refused_as_such(saved, tmp_path, monkeypatch):
    _, path = saved
    (path / "model.safetensors").unlink()
    (path / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    with pytest.raises(CheckpointError, match=r"not a usable shard index \(ValueError: its weight_map names no shard"):
        load_model(path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"own/\.\.: no such directory, and not a hub id"):
        load_model("own/..")


def test_weights_that_cannot_fit_are_refused_before_any_is_read(monkeypatch):
    """A load checks the weights' size at the load dtype against what the device has free (the CPU: Linux's
    MemAvailable and SwapFree) before reading a tensor, and says which smaller dtype would fit. A smaller machine
    is played by what `free_memory` reports."""
    from diffsolve.core import checkpoint

    free = checkpoint.free_memory(torch.device("cpu"))
    assert free is not None and 0 < free < 2**50  # read from /proc/meminfo here
    model = load_model("models/sort-demo")  # fits: nothing changes
    parameters = sum(t.numel() for t in checkpoint._state(model).values())
    read = []
    monkeypatch.setattr(checkpoint, "_read_shard", lambda *args, **kwargs: read.append(args[0]))
    monkeypatch.setattr(checkpoint, "free_memory", lambda device: 2 * parameters + 1)  # bfloat16 fits, not float32
    with pytest.raises(CheckpointError, match=rf"the weights take .* in float32 \({parameters:,} parameters\), and "
                                              r"cpu has .* free: load it in bfloat16 \(dtype='bfloat16', CLI: --dtype "
                                              r"bfloat16\), or use a machine with more memory or a GPU"):
        load_model("models/sort-demo", dtype="float32")
    monkeypatch.setattr(checkpoint, "free_memory", lambda device: 1000)
    with pytest.raises(CheckpointError, match=r"and cpu has 0.0 MB free: use a machine with more memory or a GPU"):
        load_model("models/sort-demo", dtype="bfloat16")
    assert read == []  # refused before the first shard


def test_atomic_writes_never_set_the_umask(tmp_path, monkeypatch):
    """os.umask can only read the umask by setting it, for the whole process: a file another thread made at that
    moment got the wrong mode (62 of 20,000 in a probe under umask 077 came out world-readable). A new file still
    gets 0666 less the umask."""
    from diffsolve.core import write_atomically

    real, calls = os.umask, []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real(mask))
    before = real(0o027)
    try:
        write_atomically(tmp_path / "new.txt", lambda path: path.write_text("x"))
    finally:
        real(before)
    assert calls == [] and (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640


def test_a_hub_id_given_as_a_windows_path_is_still_a_hub_id(monkeypatch):
    """`solve train --init owner/name` hands a Path to the loader; on Windows str() of it is 'owner\\\\name',
    which was refused as "not a hub id". Read as 'owner/name', it is looked up (here: offline, not cached)."""
    from pathlib import PureWindowsPath

    from diffsolve.core import resolve_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"^no-such-owner-4711/none: no such local directory, and not in the "
                                              r"Hugging Face cache \(offline mode"):
        resolve_checkpoint(PureWindowsPath("no-such-owner-4711\\none"))
