"""Math graphs on the canvas: one vocabulary and one model for colouring, Hamiltonian paths, path finding and
Countdown, plus the generators of the planted training instances.

Prompts (fixed width per problem, padded after their content, so canvas positions sit where training put them):
- colouring:   BOS <color> c{k-1} n{N-1} <edges> u v u v ...   (or <noedges> when the graph has more edges
  than the prompt holds: the canvas constraints then carry the whole graph)
- Hamiltonian: BOS <hampath>|<hamcycle> n{N-1} <edges> u v ...
- path:        BOS <path> n{s} <to> n{t} <edges> u v ...
- Countdown:   BOS <countdown> 8 6 , 2 8 , ... <to> 9 6
Canvases: one colour token per node (PAD after the last node); the node order then EOS; the steps
`a+b=c,...` one character a token, then EOS. Nodes are relabelled 0..N-1 in the input's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core import DiffusionGemma, ModelConfig, word_level_tokenizer
from ..core.training import Batch

MAX_NODES = 128  # colouring canvas; also the node vocabulary
MAX_COLORS = 128
MAX_PROMPT_EDGES = 136  # NLGraph's densest Hamiltonian graph has 132
MAX_ROUTE_NODES = 32  # Hamiltonian / path canvas (node order + EOS)
MAX_PATH_EDGES = 24
COUNTDOWN_CANVAS = 64
MAX_COUNTDOWN_NUMBERS = 6
TASKS = ("color", "hampath", "hamcycle", "path", "countdown")
OPERATORS = "+-*/"
CHARACTERS = [*"0123456789", *OPERATORS, "=", ","]

TOKENIZER = word_level_tokenizer([*(f"<{t}>" for t in TASKS), "<edges>", "<noedges>", "<to>",
                                  *(f"n{i}" for i in range(MAX_NODES)), *(f"c{i}" for i in range(MAX_COLORS)),
                                  *CHARACTERS])
VOCAB = TOKENIZER.get_vocab_size()
PAD, EOS, BOS = (TOKENIZER.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>"))
TASK_ID = {t: TOKENIZER.token_to_id(f"<{t}>") for t in TASKS}
EDGES, NO_EDGES, TO = (TOKENIZER.token_to_id(t) for t in ("<edges>", "<noedges>", "<to>"))
NODE0 = TOKENIZER.token_to_id("n0")
COLOR0 = TOKENIZER.token_to_id("c0")
CHAR_ID = {ch: TOKENIZER.token_to_id(ch) for ch in CHARACTERS}

GRAPH_PROMPT = 5 + 2 * MAX_PROMPT_EDGES
PATH_PROMPT = 6 + 2 * MAX_PATH_EDGES
COUNTDOWN_PROMPT = 2 + 4 * MAX_COUNTDOWN_NUMBERS + 1 + 4
CANVAS = {"color": MAX_NODES, "hampath": MAX_ROUTE_NODES, "hamcycle": MAX_ROUTE_NODES, "path": MAX_ROUTE_NODES,
          "countdown": COUNTDOWN_CANVAS}

AR_WEIGHT = 0.0  # diffusion loss only: the encoder reads just the prompt (cheaper on CPU)
DATA_CARD = (
    "Generated on the fly by `diffsolve.tasks.graph_data` from a seeded generator; no external data, and never the "
    "benchmark sets. Colouring: random graphs (8-128 nodes) with a planted k-colouring (k = 2-16), edges between "
    "colour classes with a random density; targets canonically relabelled by first use. Hamiltonian: 5-24 nodes, "
    "a planted path or cycle plus random chords. Path: a start-goal path of 2-8 edges plus distractor branches "
    "(a tree, so the path is unique), 8-24 nodes. Countdown: 3-5 numbers (1-99, or 1-13 with target 24), random "
    "exact operations combining all of them, target 1-999. Steps cycle colouring, Hamiltonian, path, Countdown; "
    "colouring and Hamiltonian steps draw half the batch size the recipe names (at least 1): their prompts are "
    "about 8x longer than the others.")
# Relative batch sizes, as DATA_CARD says.
BATCH_SHARE = {"color": 0.5, "hamiltonian": 0.5, "path": 1.0, "countdown": 1.0}


def model_config() -> ModelConfig:
    """About 1.3M parameters; prompt + canvas (< 410 tokens) fits every attention window."""
    return ModelConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=4,
        num_kv_heads=2, head_dim=32, num_experts=4, top_k_experts=2, moe_intermediate_size=128,
        layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=512,
        per_layer_overrides={i: {"head_dim": 64, "num_key_value_heads": 1} for i in (1, 3)},
        canvas_length=MAX_NODES,
    )


# ------------------------------------------------------------------------------------------ encodings
def _padded(ids: list[int], width: int, what: str) -> list[int]:
    if len(ids) > width:
        raise ValueError(f"{what} needs {len(ids)} prompt tokens, more than the model's {width}")
    return ids + [PAD] * (width - len(ids))


def edge_tokens(edges: Sequence[tuple[int, int]]) -> list[int]:
    return [NODE0 + v for edge in edges for v in edge]


def color_prompt(n: int, edges: Sequence[tuple[int, int]], k: int) -> list[int]:
    head = [BOS, TASK_ID["color"], COLOR0 + k - 1, NODE0 + n - 1]
    body = [EDGES, *edge_tokens(edges)] if len(edges) <= MAX_PROMPT_EDGES else [NO_EDGES]
    return _padded(head + body, GRAPH_PROMPT, "colouring")


def hamiltonian_prompt(n: int, edges: Sequence[tuple[int, int]], cycle: bool) -> list[int]:
    if len(edges) > MAX_PROMPT_EDGES:
        raise ValueError(f"a Hamiltonian graph with {len(edges)} edges; the model reads at most {MAX_PROMPT_EDGES}")
    task = TASK_ID["hamcycle" if cycle else "hampath"]
    return _padded([BOS, task, NODE0 + n - 1, EDGES, *edge_tokens(edges)], GRAPH_PROMPT, "Hamiltonian")


def path_prompt(edges: Sequence[tuple[int, int]], source: int, target: int) -> list[int]:
    ids = [BOS, TASK_ID["path"], NODE0 + source, TO, NODE0 + target, EDGES, *edge_tokens(edges)]
    return _padded(ids, PATH_PROMPT, "path finding")


def digits(value: int) -> list[int]:
    return [CHAR_ID[ch] for ch in str(value)]


def countdown_prompt(numbers: Sequence[int], target: int) -> list[int]:
    ids = [BOS, TASK_ID["countdown"]]
    for i, number in enumerate(numbers):
        ids += ([CHAR_ID[","]] if i else []) + digits(number)
    return _padded(ids + [TO, *digits(target)], COUNTDOWN_PROMPT, "Countdown")


def canvas_ids(tokens: list[int], length: int) -> list[int]:
    """Content, EOS when it fits, padding."""
    tail = [EOS] if len(tokens) < length else []
    return tokens + tail + [PAD] * (length - len(tokens) - len(tail))


def canonical_colors(colors: Sequence[int]) -> list[int]:
    """Relabel colours by first use (node 0 gets colour 0, the next new colour 1, ...)."""
    mapping: dict[int, int] = {}
    return [mapping.setdefault(c, len(mapping)) for c in colors]


# ------------------------------------------------------------------------------------------ generators
@dataclass
class Instance:
    prompt: list[int]
    canvas: list[int]


def planted_coloring(rng: np.random.Generator) -> tuple[int, list[tuple[int, int]], list[int], int]:
    """(n, edges, colours, k): a random graph whose nodes carry a proper k-colouring."""
    n = int(rng.integers(8, 41)) if rng.random() < 0.6 else int(rng.integers(41, MAX_NODES + 1))
    k = int(rng.integers(2, min(16, n) + 1))
    colors = rng.permutation(np.arange(n) % k)
    density = rng.uniform(0.05, 0.7) if rng.random() < 0.5 else rng.uniform(0.01, 0.15)
    u, v = np.triu_indices(n, 1)
    keep = (colors[u] != colors[v]) & (rng.random(u.size) < density)
    edges = list(zip(u[keep].tolist(), v[keep].tolist()))
    return n, edges, colors.tolist(), k


def coloring_instance(rng: np.random.Generator) -> Instance:
    n, edges, colors, k = planted_coloring(rng)
    order = rng.permutation(len(edges))
    edges = [edges[i] if rng.random() < 0.5 else edges[i][::-1] for i in order]
    target = [COLOR0 + c for c in canonical_colors(colors)]
    return Instance(color_prompt(n, edges, k), target + [PAD] * (MAX_NODES - n))


def planted_route(rng: np.random.Generator, cycle: bool) -> tuple[int, list[tuple[int, int]], list[int]]:
    """(n, edges, route): a random graph holding a Hamiltonian path (or cycle) `route`."""
    n = int(rng.integers(5, 25))
    route = rng.permutation(n).tolist()
    planted = {tuple(sorted(e)) for e in zip(route, route[1:] + (route[:1] if cycle else []))}
    density = rng.uniform(0.0, 0.5)
    u, v = np.triu_indices(n, 1)
    extra = [e for e in zip(u.tolist(), v.tolist()) if e not in planted and rng.random() < density]
    rng.shuffle(extra)
    edges = list(planted) + extra[:max(0, MAX_PROMPT_EDGES - len(planted))]
    rng.shuffle(edges)
    return n, [e if rng.random() < 0.5 else e[::-1] for e in edges], route


def canonical_route(route: list[int], cycle: bool) -> list[int]:
    """One representative per route: cycles start at their smallest node; the direction with the smaller
    second node (cycles) or smaller first node (paths) wins."""
    if cycle:
        i = route.index(min(route))
        route = route[i:] + route[:i]
        return route if len(route) < 3 or route[1] < route[-1] else route[:1] + route[1:][::-1]
    return route if route[0] < route[-1] else route[::-1]


def hamiltonian_instance(rng: np.random.Generator) -> Instance:
    cycle = bool(rng.random() < 0.3)
    n, edges, route = planted_route(rng, cycle)
    target = [NODE0 + v for v in canonical_route(route, cycle)]
    return Instance(hamiltonian_prompt(n, edges, cycle), canvas_ids(target, MAX_ROUTE_NODES))


def path_instance(rng: np.random.Generator) -> Instance:
    """A tree: the start-goal path plus random distractor branches hanging off it (as in Ye et al.)."""
    length = int(rng.integers(2, 9))
    n = int(rng.integers(max(8, length + 1), 25))
    labels = rng.permutation(n).tolist()
    path = labels[:length + 1]
    edges = list(zip(path, path[1:]))
    attached = list(path)
    for v in labels[length + 1:]:
        edges.append((attached[int(rng.integers(len(attached)))], v))
        attached.append(v)
    edges = edges[:MAX_PATH_EDGES]
    rng.shuffle(edges)
    edges = [e if rng.random() < 0.5 else e[::-1] for e in edges]
    target = [NODE0 + v for v in path]
    return Instance(path_prompt(edges, path[0], path[-1]), canvas_ids(target, MAX_ROUTE_NODES))


def apply(a: int, op: str, b: int) -> int | None:
    """The exact integer result of `a op b`, or None when Countdown forbids it (negative, fraction, /0)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    return a // b if b and a % b == 0 else None


def random_countdown(rng: np.random.Generator) -> tuple[list[int], int, list[str]]:
    """(numbers, target, steps) with every number used once, the larger operand first."""
    game24 = rng.random() < 0.2
    while True:
        count = 4 if game24 else int(rng.integers(3, 6))
        numbers = rng.integers(1, 14 if game24 else 100, size=count).tolist()
        pool, steps = list(numbers), []
        while len(pool) > 1:
            i, j = rng.choice(len(pool), 2, replace=False).tolist()
            a, b = max(pool[i], pool[j]), min(pool[i], pool[j])
            op = "+-*/"[int(rng.integers(4))]
            c = apply(a, op, b)
            if c is None or c == 0 or c > 99_999:
                continue
            steps.append(f"{a}{op}{b}={c}")
            pool = [x for t, x in enumerate(pool) if t not in (i, j)] + [c]
        target = pool[0]
        if (target == 24) if game24 else 1 <= target <= 999:
            return numbers, target, steps


def countdown_instance(rng: np.random.Generator) -> Instance:
    numbers, target, steps = random_countdown(rng)
    text = [CHAR_ID[ch] for ch in ",".join(steps)]
    return Instance(countdown_prompt(numbers, target), canvas_ids(text, COUNTDOWN_CANVAS))


MAKERS: dict[str, Callable[[np.random.Generator], Instance]] = {
    "color": coloring_instance, "hamiltonian": hamiltonian_instance, "path": path_instance,
    "countdown": countdown_instance}


def make_batch(problem: str, rng: np.random.Generator, batch_size: int) -> Batch:
    examples = [MAKERS[problem](rng) for _ in range(batch_size)]
    return Batch(torch.tensor([e.prompt for e in examples]), torch.tensor([e.canvas for e in examples]))


def batches(out_dir, seed: int, batch_size: int, device: str, **_) -> Callable[[int, torch.Generator], Batch]:
    """Step s trains problem s mod 4, each batch freshly generated from (seed, step)."""
    problems = list(MAKERS)

    def batch(step: int, generator: torch.Generator) -> Batch:
        problem = problems[step % len(problems)]
        rng = np.random.default_rng([seed, step])
        return make_batch(problem, rng, max(1, int(batch_size * BATCH_SHARE[problem])))

    return batch


@torch.no_grad()
def evaluate(model: DiffusionGemma, n: int = 64, seed: int = 10**6) -> dict[str, float]:
    """Per problem, on fresh instances: token accuracy and exact-canvas rate of the argmax after two passes
    from pure noise (the second self-conditioned) -- model quality that no guidance inflates."""
    metrics = {}
    device = model.device
    g = torch.Generator(device).manual_seed(seed)
    for problem in MAKERS:
        batch = make_batch(problem, np.random.default_rng([seed, len(problem)]), n)
        prompt, target = batch.prompt.to(device), batch.target.to(device)
        cache = model.encode(prompt)
        canvas = torch.randint(0, VOCAB, target.shape, generator=g, device=device)
        first = model.denoise(canvas, cache)
        guess = model.denoise(canvas, cache, first).argmax(-1)
        content = target != PAD
        metrics[f"{problem}_token_acc"] = ((guess == target) & content).sum().item() / content.sum().item()
        metrics[f"{problem}_exact"] = (guess == target).all(-1).float().mean().item()
    return metrics
