# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# A local virtual environment in .venv is created on first use. torch 2.13.0 is installed first (the CPU
# build where pip finds it first, as in this workplace's wheel cache; see the README) unless the venv already has a torch (bring your own CUDA build: install it into .venv first,
# or run `make TORCH=torch demo`).
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test bench results moses clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/solve demo
	$(VENV)/bin/solve sudoku examples/sudoku.txt
	$(VENV)/bin/solve molecules -n 5 --logp 2:3 --seed 0 --format csv
	$(VENV)/bin/solve coloring examples/petersen.col --max-steps 64
	$(VENV)/bin/solve hamiltonian examples/petersen.col
	$(VENV)/bin/solve path examples/petersen.col --source 1 --target 7
	$(VENV)/bin/solve countdown examples/countdown.jsonl || true  # the last instance has no solution: exit 1

test: $(STAMP)
	$(PY) -m pytest

# Benchmarks (developers: Sudoku and graphs read the public sets in ../shared/data).
# `make bench`: short runs of every benchmark but molecule_acceptance.py (it must design thousands of molecules
# before it can fit anything), written to runs/bench/ so the committed results stay as they are. `make results`: the runs behind benchmarks/results/, benchmarks/RESULTS.md and the README (many hours on 2 CPU cores, never
# timed as one run; the colouring table in benchmarks/RESULTS.md was run as two parallel streams joined with
# `benchmarks/graphs.py --combine`, which gives the same table sooner).
bench: moses
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/engine.py --quick --out runs/bench/engine.json
	$(PY) benchmarks/training.py --steps 3 --out runs/bench/training.json
	$(PY) benchmarks/sudoku.py --per-tier 5 --max-steps 128 --out runs/bench/sudoku.json
	$(PY) benchmarks/sudoku_sampler.py --puzzles 4 --settings released,shipped --out runs/bench/sudoku_sampler.json
	$(PY) benchmarks/molecules.py --samples 1000 --per-request 5 --scaffolds 4 --out runs/bench/molecules.json
	$(PY) benchmarks/molecule_raw.py --samples 100 --passes 48,96 --conditions none,train --out runs/bench/molecule_raw.json
	$(PY) benchmarks/scaffold_decoration.py --scaffolds 1 --canvases 16 --out runs/bench/scaffold_decoration.json
	$(PY) benchmarks/graphs.py --limit 16 --coloring-limit 8 --coloring-steps 128 --out runs/bench/graphs.json

results: moses
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/training.py --compile
	$(PY) benchmarks/sudoku.py --per-tier 50 --max-steps 128 --modes model_only,full --threads 1
	$(PY) benchmarks/sudoku.py --per-tier 50 --max-steps 128 --modes backtrack --threads 1 --merge
	$(PY) benchmarks/sudoku.py --per-tier 0 --modes full --max-steps 256 --threads 1 --out benchmarks/results/sudoku_all.json
	$(PY) benchmarks/sudoku.py --per-tier 0 --modes model_only --max-steps 256 --threads 1 --merge --out benchmarks/results/sudoku_all.json
	$(PY) benchmarks/sudoku_sampler.py
	$(PY) benchmarks/molecules.py --samples 10000 --full-canvases 32000 --per-request 5 --scaffolds 4 --threads 2
	$(PY) benchmarks/molecule_raw.py --passes 48,96 --conditions none,train --merge  # --merge keeps the stage-6 rows (the model shipped before)
	$(PY) benchmarks/molecule_acceptance.py  # designs 10,000 molecules without the acceptance first (about 45 minutes)
	$(PY) benchmarks/scaffold_decoration.py --threads 1
	$(PY) benchmarks/graphs.py --families path,hamiltonian --threads 1
	$(PY) benchmarks/graphs.py --families countdown --countdown-sets cd3_test,cd4_test,cd4_tot24 --threads 1 --merge
	$(PY) benchmarks/graphs.py --families countdown --countdown-sets cd5_test --countdown-limit 128 --threads 1 --merge
	$(PY) benchmarks/graphs.py --families coloring --coloring-steps 1024 --backtrack-steps 1024 --tabu-steps 256 --threads 1 --merge
	cp benchmarks/results/graphs.json benchmarks/results/graphs_long.json
	$(PY) benchmarks/graphs.py --families coloring --coloring-instances DSJC125.5 --coloring-modes full --coloring-steps 8192 --threads 1 --merge --out benchmarks/results/graphs_long.json
	$(PY) benchmarks/graphs.py --families coloring --coloring-instances queen10_10 --coloring-modes full --coloring-steps 8192 --threads 1 --merge --out benchmarks/results/graphs_long.json

# The MOSES data (training set, test sets, filter alerts) from the molsets wheel, without its dependencies.
moses: $(STAMP)
	$(PY) -c "import importlib.metadata as m; m.distribution('molsets')" 2>/dev/null || \
		$(PY) -m pip install -q --no-deps molsets==0.3.1

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
