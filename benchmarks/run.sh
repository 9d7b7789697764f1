#!/usr/bin/env bash
# The side-by-side overhead benchmark (benchmarks/README.md): HTTP throughput and server CPU per request of
# every variant under wrk, the per-call micro-benchmarks, the routes-scaling run (with the after-effect) and the
# profiles.
#
#   bash benchmarks/run.sh                       # everything, ~33 minutes on 2 cores
#   ROUNDS=9 DURATION=10 bash benchmarks/run.sh  # longer, steadier
#   ONLY=http|micro|routes|profile bash benchmarks/run.sh
#
# Knobs (env): ROUNDS (5), DURATION measured seconds per variant and round (5), SLICE seconds per turn
# under wrk (1), WARMUP seconds (1), CONNECTIONS (8),
# THREADS (1), FRAMEWORKS ("flask fastapi"), VARIANTS (all), PIN (1: server on CPU 1, wrk + receiver on
# CPU 0), SEED (shuffle of the variant order inside a round), PROFILE_REQUESTS (3000), OBSKIT_BASELINE_REF (A/B:
# every obskit variant also served from that commit, in the same rounds).
# Results go to benchmarks/results/<timestamp>/ (ignored by git); the tables are printed at the end.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
cd "$ROOT"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# wrk comes from Debian; prometheus too (the script installs what the test suite needs alongside).
bash scripts/install-system-deps.sh --bench

# A venv of its own, so the test venv stays lean: obskit editable plus the competitors and the profiler.
VENV="$HERE/.venv"
STAMP="$VENV/.installed"
REQS=(
    "-e" ".[all]"
    "gunicorn>=22" "uvicorn[standard]>=0.30" "httpx>=0.27"
    "ddtrace>=2.10" "prometheus-client>=0.20" "prometheus-flask-exporter>=0.23"
    "prometheus-fastapi-instrumentator>=7" "py-spy>=0.3.14"
)
pip_install() {  # quiet unless it fails
    local log
    log="$(mktemp)"
    if ! "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1; then
        grep -v "is ignored" "$log" >&2 || true
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ "$HERE/run.sh" -nt "$STAMP" ]; then
    echo "setting up $VENV"
    python3 -m venv "$VENV"
    pip_install --upgrade pip
    pip_install "${REQS[@]}"
    touch "$STAMP"
fi
PY="$VENV/bin/python"

OUT="${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
# Measure a snapshot of src/obskit, taken now: commits landing during the run must not change the code under
# test half-way through. OBSKIT_REF=HEAD (default) or any commit; OBSKIT_REF=worktree for uncommitted edits.
OBSKIT_REF="${OBSKIT_REF:-HEAD}"
OBSKIT_SRC="$OUT/src"
mkdir -p "$OBSKIT_SRC"
if [ "$OBSKIT_REF" = worktree ]; then
    tar -C "$ROOT/src" --exclude=__pycache__ -cf - obskit | tar -C "$OBSKIT_SRC" -xf -
    OBSKIT_DESC="working tree at $(git rev-parse --short HEAD) ($(git status --porcelain src | wc -l) uncommitted paths in src/)"
else
    git archive "$OBSKIT_REF" src/obskit | tar -C "$OUT" -xf -
    OBSKIT_DESC="$(git rev-parse --short "$OBSKIT_REF") ($(git log -1 --format=%cd --date=iso "$OBSKIT_REF"))"
fi
export OBSKIT_SRC
# A/B mode: OBSKIT_BASELINE_REF=<commit> serves every obskit variant a second time from that commit's src/obskit,
# in the same rounds (bench_http.py's A/B table gives the paired per-round differences).
if [ -n "${OBSKIT_BASELINE_REF:-}" ]; then
    mkdir -p "$OUT/baseline"
    git archive "$OBSKIT_BASELINE_REF" src/obskit | tar -C "$OUT/baseline" -xf -
    export OBSKIT_BASELINE_SRC="$OUT/baseline/src"
    OBSKIT_DESC="$OBSKIT_DESC; baseline $(git rev-parse --short "$OBSKIT_BASELINE_REF")"
fi
export PYTHONPATH="$OBSKIT_SRC:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
ONLY="${ONLY:-all}"
echo "results: $OUT"
"$PY" -c 'import sys, platform; print("python", sys.version.split()[0], platform.machine())' | tee "$OUT/env.txt"
"$PY" -m pip freeze 2>/dev/null | grep -i -E '^(opentelemetry|ddtrace|prometheus|flask|fastapi|starlette|uvicorn|gunicorn|wrapt)' >>"$OUT/env.txt" || true
wrk --version 2>&1 | head -1 >>"$OUT/env.txt" || true
# Which obskit was measured (the snapshot above).
echo "obskit measured: $OBSKIT_DESC" >>"$OUT/env.txt"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >>"$OUT/env.txt"

if [ "$ONLY" = all ] || [ "$ONLY" = micro ]; then
    echo "== micro-benchmark: one decorated stage call (benchmarks/bench_stage.py)"
    # Another engineer's script: its failure (say, against an older OBSKIT_REF) must not stop the run.
    "$PY" "$HERE/bench_stage.py" --rounds "${MICRO_ROUNDS:-7}" | tee "$OUT/micro.txt" || echo "bench_stage.py failed" >&2
fi
if [ "$ONLY" = all ] || [ "$ONLY" = http ]; then
    echo "== HTTP: interleaved rounds of every variant under wrk (benchmarks/bench_http.py)"
    "$PY" "$HERE/bench_http.py" --out "$OUT" | tee "$OUT/http.txt"
fi
if [ "$ONLY" = all ] || [ "$ONLY" = routes ]; then
    echo "== routes scaling: bare and obskit apps at 10 and 1,000 routes in one process (benchmarks/bench_routes.py)"
    "$PY" "$HERE/bench_routes.py" --frameworks fastapi flask --stock 2 --out "$OUT/routes.md" | tee "$OUT/routes.txt"
    echo "== after-effect: the same Python loop right after a bare or an obskit request (benchmarks/bench_aftereffect.py)"
    "$PY" "$HERE/bench_aftereffect.py" --frameworks fastapi flask --out "$OUT/aftereffect.md" | tee "$OUT/aftereffect.txt"
fi
if [ "$ONLY" = all ] || [ "$ONLY" = profile ]; then
    echo "== profile: obskit full, in-process test client (benchmarks/profile_obskit.py)"
    "$PY" "$HERE/profile_obskit.py" --out "$OUT" | tee "$OUT/profile.txt"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"

# One file with everything, the source of the tables in benchmarks/README.md.
{
    echo "# obskit benchmark $(basename "$OUT")"
    printf '\n```\n'; cat "$OUT/env.txt"; printf '```\n'
    if [ -f "$OUT/micro.txt" ]; then printf '\n## Micro-benchmark (bench_stage.py)\n\n```\n'; cat "$OUT/micro.txt"; printf '```\n'; fi
    if [ -f "$OUT/http.md" ]; then printf '\n## HTTP (bench_http.py)\n\n'; cat "$OUT/http.md"; fi
    if [ -f "$OUT/routes.md" ]; then printf '\n## Routes scaling (bench_routes.py)\n\n'; cat "$OUT/routes.md"; fi
    if [ -f "$OUT/aftereffect.md" ]; then printf '\n## After-effect (bench_aftereffect.py)\n\n'; cat "$OUT/aftereffect.md"; fi
    if [ -f "$OUT/profile.md" ]; then printf '\n## Profile (profile_obskit.py)\n\n'; cat "$OUT/profile.md"; fi
} >"$OUT/summary.md"
echo "summary: $OUT/summary.md"
