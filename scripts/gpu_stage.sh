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
# 27 MB. Call 1 has about 2 MiB to spare: bundle prints what each call carries, and an untracked file (see git
# status) counts too. The calls: run(command="scripts/gpu_stage.sh start", carry=["runs/gpu/whl"],
# kind="nvidia-h200", timeout_s=120), then at once run(command="scripts/gpu_stage.sh finish",
# carry=["runs/gpu/data"], timeout_s=600), then give_back: about 13 of the 15 minutes with the machine's start,
# so a failed start leaves no time for a second try. finish writes both tars by FINISH_DEADLINE whatever happened
# (a run still going is interrupted and its last checkpoint's weights come back) and exits 1 unless both runs
# ended well. The H200 is where Sudoku last trained at batch 2,048 beside a molecule run; on an H100 (about
# 78 GiB) Sudoku takes 1,024 a step (see SUDOKU_BATCH). Judge the new weights here before shipping them
# (models/*/README.md says how each stage was judged).
# A dry run on a CPU machine: GPU_STAGE_DEVICE=cpu SUDOKU_BUDGET=300 MOLECULES_BUDGET=300 SUDOKU_EXAMPLES=2000
# SUDOKU_WORKERS=2 SUDOKU_BATCH=64 MOLECULE_BATCH=64 with start, then finish (start skips the wheels where RDKit
# already imports; compiling takes the first few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUNS=${GPU_STAGE_RUNS:-runs/gpu}          # a relative folder is in the repository
DEVICE=${GPU_STAGE_DEVICE:-cuda}
SUDOKU_BUDGET=${SUDOKU_BUDGET:-480}        # seconds; Sudoku starts a minute or so before molecules
MOLECULES_BUDGET=${MOLECULES_BUDGET:-420}
SUDOKU_EXAMPLES=${SUDOKU_EXAMPLES:-200000}
# Sudoku: 2,048 a step where the GPU has 100 GiB or more (an H200, as in its stage 2), else 1,024: a training
# example costs about 45 MB in float32 here (11.4 GB for 256), so 2,048 beside the molecule run may not fit an H100
SUDOKU_BATCH=${SUDOKU_BATCH:-auto}
MOLECULE_BATCH=${MOLECULE_BATCH:-1024}
MOLECULE_EXAMPLES=${MOLECULE_EXAMPLES:-1000000}
SUDOKU_WORKERS=${SUDOKU_WORKERS:-14}        # part of the data: each worker generates from its own seed
START_WAIT=${START_WAIT:-20}                # seconds start watches the Sudoku run before it returns
FINISH_DEADLINE=${FINISH_DEADLINE:-550}     # seconds: finish writes both tars by then (the call's limit is 600)
MOLECULE_SEED=11                           # stages 1-9 used seeds 0-10
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}  # the GPU machine has no .venv

# The package without installing it (a pip install needs a build backend the GPU machine may lack): a folder
# whose diffsolve/ links the repository's folders as pyproject.toml's package-dir maps them.
use_package() {
    if [[ ${1:-} == fresh || ! -d $RUNS/src ]]; then
        rm -rf "$RUNS/src"
        "$PYTHON" scripts/link_package.py "$RUNS/src"
    fi
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
    # one du for every file (xargs could split the list, each part with its own total); a tracked file deleted
    # here is only warned about
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 \
           | cut -f1 || true)
    for part in whl data; do  # the device tool carries at most 64 MiB a call: the working tree and these
        echo "call carrying $RUNS/$part: $(( (tree + $(du -sb "$RUNS/$part" | cut -f1)) / 1048576 )) MiB of 64"
    done
}

start() {
    use_package fresh
    if ! "$PYTHON" -c "import rdkit, partialsmiles" 2>/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$RUNS/site" "$RUNS"/whl/*.whl
    fi
    "$PYTHON" -c "import torch, rdkit; print('torch', torch.__version__, 'rdkit', rdkit.__version__, \
'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    if [[ $SUDOKU_BATCH == auto ]]; then
        SUDOKU_BATCH=$("$PYTHON" -c "import torch; print(2048 if torch.cuda.is_available() and \
torch.cuda.get_device_properties(0).total_memory >= 100 * 2**30 else 1024)")
    fi
    echo "sudoku: batch $SUDOKU_BATCH"
    rm -rf "$RUNS/sudoku" "$RUNS"/sudoku.{out,err,rc,pid}
    mkdir -p "$RUNS/sudoku"
    # setsid: the run outlives this call (the machine stays while the next call comes within 30 s). The shell
    # around it records its exit status; finish stops its process group with SIGTERM, which `solve` takes as
    # Ctrl-C in every phase (SIGINT stays ignored in a background job) and this shell ignores, to write the status.
    setsid bash -c 'trap "" TERM; "$@" > "$RUNS/sudoku.out" 2> "$RUNS/sudoku.err" < /dev/null
                    echo $? > "$RUNS/sudoku.rc"' \
        sudoku "$PYTHON" -m diffsolve --compile train sudoku --out "$RUNS/sudoku" --steps 100000 \
        --batch-size "$SUDOKU_BATCH" --lr 0.001 --seed 2 --device "$DEVICE" --time-budget "$SUDOKU_BUDGET" \
        --examples "$SUDOKU_EXAMPLES" --workers "$SUDOKU_WORKERS" --threads 4 --init models/sudoku \
        > /dev/null 2>&1 < /dev/null &  # holding none of this call's output open, so the call can end
    echo $! > "$RUNS/sudoku.pid"
    sleep "$START_WAIT"
    tail -3 "$RUNS/sudoku.err" 2>/dev/null || true
    if [[ -f $RUNS/sudoku.rc ]]; then
        echo "sudoku stage ended already (exit $(cat "$RUNS/sudoku.rc"))"
        return 1
    fi
    echo "sudoku stage running (process group $(cat "$RUNS/sudoku.pid"))"
}

finish() {
    ((FINISH_DEADLINE > 45)) || { echo "FINISH_DEADLINE=$FINISH_DEADLINE: more than 45 s, please" >&2; return 2; }
    use_package
    local began=$SECONDS status=0 pid sudoku_status
    rm -rf "$RUNS/molecules" "$RUNS"/molecules.{out,err}
    # the run stops at its --time-budget; the timeout only if it is slow (SIGTERM: it checkpoints and stops;
    # SIGKILL 15 s later if it has not, so that both tars are still written)
    timeout --preserve-status -k 15 -s TERM $((FINISH_DEADLINE - 45)) "$PYTHON" -m diffsolve --compile train molecules \
        --out "$RUNS/molecules" --steps 100000 --batch-size "$MOLECULE_BATCH" --lr 0.0005 --seed "$MOLECULE_SEED" \
        --device "$DEVICE" --time-budget "$MOLECULES_BUDGET" --data "$RUNS/data/moses_train.npz" --threads 4 \
        --init models/molecules > "$RUNS/molecules.out" 2> "$RUNS/molecules.err" || status=$?
    echo "molecules: exit $status"; tail -5 "$RUNS/molecules.err"
    pack molecules "$status"
    pid=$(cat "$RUNS/sudoku.pid" 2>/dev/null || true)
    while [[ -n $pid && ! -f $RUNS/sudoku.rc ]] && ((SECONDS - began < FINISH_DEADLINE - 25)); do sleep 2; done
    if [[ -n $pid && ! -f $RUNS/sudoku.rc ]]; then
        echo "sudoku: still running at the deadline; interrupted (its last checkpoint comes back)"
        kill -TERM -- -"$pid" 2>/dev/null || true
        for _ in {1..10}; do [[ -f $RUNS/sudoku.rc ]] && break; sleep 1; done
    fi
    sudoku_status=$(cat "$RUNS/sudoku.rc" 2>/dev/null || echo "unknown (no run: call start first)")
    echo "sudoku: exit $sudoku_status"
    tail -5 "$RUNS/sudoku.err" 2>/dev/null || true
    pack sudoku "$sudoku_status"
    ls -la "${OUT:-$RUNS}"/*.tar
    [[ $status == 0 && $sudoku_status == 0 ]]
}

# What a run left, as one tar in $OUT (always written, empty when nothing is there): its summary and log, and
# after a run that ended well its model and card, else the weights of its last checkpoint (a model folder may be
# half-written), never the optimizer state (twice the weights: over the 16 MiB a file may have).
pack() {
    local run=$1 status=$2 parts
    parts=$(cd "$RUNS" && ls -d "$run.out" "$run.err" "$run/train_log.jsonl" 2>/dev/null || true)
    [[ $status == 0 ]] && parts+=" $run/model" || parts+=" $(cd "$RUNS" && ls -d "$run/checkpoint" 2>/dev/null || true)"
    # shellcheck disable=SC2086  # the parts are names without spaces
    tar -C "$RUNS" --exclude=training_state.safetensors -cf "${OUT:-$RUNS}/$run.tar" -T /dev/null $parts \
        || echo "$run.tar: tar exit $? (a file changed while it was read?)"
}

# A run here is replaced only by a tar that holds it; every tar is read before anything is replaced.
unpack() {
    local from=${1:?"unpack DIR: the folder the device tool put sudoku.tar and molecules.tar in"} run names found=()
    from=$(cd "$OLDPWD" && realpath "$from")  # DIR as the caller meant it, before the cd to the repository
    for run in sudoku molecules; do
        if [[ ! -f $from/$run.tar ]]; then
            echo "$from/$run.tar: missing; $RUNS/$run left as it was"
        elif ! names=$(tar -tf "$from/$run.tar" 2>&1); then
            echo "$from/$run.tar: unreadable ($names); $RUNS/$run left as it was"
        elif [[ $'\n'$names == *$'\n'$run/* ]]; then
            found+=("$run")
        else
            echo "$from/$run.tar: holds no $run run; $RUNS/$run left as it was"
        fi
    done
    ((${#found[@]})) || { echo "nothing to unpack from $from" >&2; return 1; }
    mkdir -p "$RUNS"
    for run in "${found[@]}"; do
        rm -rf "${RUNS:?}/$run.new" && mkdir "$RUNS/$run.new"
        tar -C "$RUNS/$run.new" -xf "$from/$run.tar"
        rm -rf "${RUNS:?}/$run" "$RUNS"/$run.{out,err}
        mv "$RUNS/$run.new/$run" "$RUNS/$run"
        mv "$RUNS/$run.new"/$run.{out,err} "$RUNS/" 2>/dev/null || true
        rm -rf "$RUNS/$run.new"
        echo "== $RUNS/$run: $(ls "$RUNS/$run" | tr '\n' ' ')"
        cat "$RUNS/$run.out" 2>/dev/null || true
    done
}

# The package as the GPU machine will import it (the test suite runs this).
check() {
    use_package fresh
    "$PYTHON" -m diffsolve --version
    "$PYTHON" -c "import diffsolve.solvers.cli as c, diffsolve.models as m; print(m.__path__[0]); print(c.__file__)"
}

case ${1:-} in
    check) check ;;
    bundle) bundle ;;
    start) start ;;
    finish) finish ;;
    unpack) unpack "${2:-}" ;;
    *) sed -n '2,28p' "$0"; exit 2 ;;
esac
