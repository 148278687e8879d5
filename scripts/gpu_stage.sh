#!/usr/bin/env bash
# One more training stage of the shipped Sudoku and molecule models on a lent GPU, prepared so that a session
# lent one (this workplace's `device` tool: 15 minutes of one H100 or H200 in all, 10 minutes a command,
# 64 MiB carried a call, no package registry there) spends its minutes training, not setting up.
#
#   here, first:      scripts/gpu_stage.sh bundle      RDKit + partialsmiles wheels for the GPU machine's
#                                                      Python 3.12 (runs/gpu/whl) and a featurized MOSES subset
#                                                      (runs/gpu/data, about 6 minutes on 2 cores)
#   device, call 1:   scripts/gpu_stage.sh start       carry runs/gpu/whl: installs them, starts the Sudoku stage
#                                                      in its own process session, returns in under a minute
#   device, call 2:   scripts/gpu_stage.sh finish      carry runs/gpu/data, at once (a machine idle 30 s goes
#                                                      back): trains molecules, waits for Sudoku, writes the two
#                                                      runs to $OUT as sudoku.tar and molecules.tar
#   here, after:      scripts/gpu_stage.sh unpack DIR  the files that came back -> runs/gpu/{sudoku,molecules}
#
# Two calls, because one cannot carry both: the repository is about 33 MB, the wheels 32 MB, the training set
# 27 MB (bundle prints what each call carries). The calls: run(command="scripts/gpu_stage.sh start",
# carry=["runs/gpu/whl"], kind="nvidia-h200", timeout_s=120), then run(command="scripts/gpu_stage.sh finish",
# carry=["runs/gpu/data"], timeout_s=600); about 12 of the 15 minutes with the machine's start. The H200 is where
# Sudoku last trained at batch 2,048 beside a molecule run; on an H100 (80 GB) that pairing is untried.
# Judge the new weights here before shipping them (models/*/README.md says how each stage was judged).
# A dry run on a CPU machine: GPU_STAGE_DEVICE=cpu SUDOKU_BUDGET=300 MOLECULES_BUDGET=300 SUDOKU_EXAMPLES=2000
# SUDOKU_WORKERS=2 SUDOKU_BATCH=64 MOLECULE_BATCH=64 with start, then finish (start skips the wheels where RDKit
# already imports; compiling takes the first few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${GPU_STAGE_RUNS:-runs/gpu}
DEVICE=${GPU_STAGE_DEVICE:-cuda}
SUDOKU_BUDGET=${SUDOKU_BUDGET:-480}        # seconds; Sudoku starts a minute or so before molecules
MOLECULES_BUDGET=${MOLECULES_BUDGET:-420}
SUDOKU_EXAMPLES=${SUDOKU_EXAMPLES:-200000}
SUDOKU_BATCH=${SUDOKU_BATCH:-2048}           # on a CPU, 2048 Sudoku canvases a step take over 24 GB
MOLECULE_BATCH=${MOLECULE_BATCH:-1024}
MOLECULE_EXAMPLES=${MOLECULE_EXAMPLES:-1000000}
SUDOKU_WORKERS=${SUDOKU_WORKERS:-14}        # part of the data: each worker generates from its own seed
SUDOKU_WAIT=${SUDOKU_WAIT:-90}              # seconds finish waits for Sudoku after molecules end
MOLECULE_SEED=11                           # stages 1-9 used seeds 0-10
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}  # the GPU machine has no .venv

# The package without installing it (a pip install needs a build backend the GPU machine may lack): a folder
# whose diffsolve/ links the repository's folders as pyproject.toml's package-dir maps them.
use_package() {
    rm -rf "$RUNS/src"
    "$PYTHON" - "$RUNS/src" <<'EOF'
import sys, tomllib
from pathlib import Path

root = Path(sys.argv[1])
packages = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
for package, folder in packages.items():  # a real folder per package, its files linked (never written through)
    here = root.joinpath(*package.split("."))
    here.mkdir(parents=True)
    for entry in Path(folder).resolve().iterdir():
        if entry.name != "__pycache__" and f"{package}.{entry.name}" not in packages:
            (here / entry.name).symlink_to(entry)
EOF
    export PYTHONSAFEPATH=1  # not the working directory first: its diffsolve/ holds only the top module
    export PYTHONPATH=$(realpath "$RUNS/src"):$(realpath -m "$RUNS/site")${PYTHONPATH:+:$PYTHONPATH}
}

bundle() {
    local rdkit
    rdkit=$(.venv/bin/python -c "import rdkit; print(rdkit.__version__)")
    rm -rf "$RUNS/whl" "$RUNS/data" && mkdir -p "$RUNS/whl" "$RUNS/data"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$RUNS/whl" "rdkit==$rdkit" "partialsmiles==2.0"
    .venv/bin/python - "$RUNS/data/moses_train.npz" "$MOLECULE_EXAMPLES" "$MOLECULE_SEED" <<'EOF'
import sys
from pathlib import Path

from diffsolve.tasks.molecules import training_set

path, examples, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"{path}: {len(training_set(path, examples, seed, workers=2)['molecules']):,} molecules")
EOF
    local tree
    tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
    for part in whl data; do  # the device tool carries at most 64 MiB a call: the working tree and these
        echo "call carrying $RUNS/$part: $(( (tree + $(du -sb "$RUNS/$part" | cut -f1)) / 1048576 )) MiB of 64"
    done
}

start() {
    use_package
    if ! "$PYTHON" -c "import rdkit, partialsmiles" 2>/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$RUNS/site" \
            "$RUNS"/whl/*.whl
    fi
    "$PYTHON" -c "import torch, rdkit; print('torch', torch.__version__, 'rdkit', rdkit.__version__, \
'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    rm -rf "$RUNS/sudoku"
    mkdir -p "$RUNS/sudoku"
    # setsid: the run outlives this call (the machine stays while the next call comes within 30 s)
    setsid nohup "$PYTHON" -m diffsolve --compile train sudoku --out "$RUNS/sudoku" --steps 100000 \
        --batch-size "$SUDOKU_BATCH" --lr 0.001 --seed 2 --device "$DEVICE" --time-budget "$SUDOKU_BUDGET" \
        --examples "$SUDOKU_EXAMPLES" --workers "$SUDOKU_WORKERS" --threads 4 --init models/sudoku \
        > "$RUNS/sudoku.out" 2> "$RUNS/sudoku.err" < /dev/null &
    echo $! > "$RUNS/sudoku.pid"
    sleep 20
    tail -3 "$RUNS/sudoku.err"
    kill -0 "$(cat "$RUNS/sudoku.pid")" && echo "sudoku stage running (pid $(cat "$RUNS/sudoku.pid"))"
}

finish() {
    use_package
    local status=0
    rm -rf "$RUNS/molecules"
    "$PYTHON" -m diffsolve --compile train molecules --out "$RUNS/molecules" --steps 100000 \
        --batch-size "$MOLECULE_BATCH" --lr 0.0005 --seed "$MOLECULE_SEED" --device "$DEVICE" \
        --time-budget "$MOLECULES_BUDGET" \
        --data "$RUNS/data/moses_train.npz" --threads 4 --init models/molecules \
        > "$RUNS/molecules.out" 2> "$RUNS/molecules.err" || status=$?
    echo "molecules: exit $status"; tail -5 "$RUNS/molecules.err"
    local pid waited=0
    pid=$(cat "$RUNS/sudoku.pid")
    while kill -0 "$pid" 2>/dev/null && ((waited < SUDOKU_WAIT)); do sleep 5; ((waited += 5)); done
    if kill -0 "$pid" 2>/dev/null; then  # Ctrl-C: it checkpoints and stops, so this call still ends in time
        echo "sudoku: still running after another ${SUDOKU_WAIT} s; interrupted"; kill -INT -- -"$pid" || true
        sleep 15
    fi
    echo "sudoku:"; tail -5 "$RUNS/sudoku.err"
    for run in sudoku molecules; do  # what each run left: its summary, log, weights and card (not checkpoints)
        tar -C "$RUNS" -cf "${OUT:-$RUNS}/$run.tar" \
            $(cd "$RUNS" && ls -d "$run.out" "$run.err" "$run/train_log.jsonl" "$run/model" 2>/dev/null)
    done
    ls -la "${OUT:-$RUNS}"/*.tar
    return $status
}

unpack() {
    local from=${1:?"unpack DIR: the folder the device tool put sudoku.tar and molecules.tar in"}
    mkdir -p "$RUNS"
    for run in sudoku molecules; do
        rm -rf "${RUNS:?}/$run"
        tar -C "$RUNS" -xf "$from/$run.tar"
        echo "== $RUNS/$run (its summary; the model in $RUNS/$run/model)"
        cat "$RUNS/$run.out"
    done
}

# The package as the GPU machine will import it (the test suite runs this).
check() {
    use_package
    "$PYTHON" -m diffsolve --version
    "$PYTHON" -c "import diffsolve.solvers.cli, diffsolve.models as m; print(m.__path__[0])"
}

case ${1:-} in
    check) check ;;
    bundle) bundle ;;
    start) start ;;
    finish) finish ;;
    unpack) unpack "${2:-}" ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
esac
