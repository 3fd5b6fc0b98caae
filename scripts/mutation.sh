#!/usr/bin/env bash
# Mutation testing of tf_lrp's core modules with mutmut 2.x (not in CI: hours, not minutes).
#
#   python -m pip install "mutmut<3" pytest-cov
#   scripts/mutation.sh                      # every module below, one after the other
#   scripts/mutation.sh storage.py runs/shards.py  # just these (keys of MODULES)
#   JOBS=2 scripts/mutation.sh               # two modules at a time (one core each)
#   SAMPLE=0.2 scripts/mutation.sh rules     # a fixed random fifth of the mutants (the rest
#                                            # are marked skipped; the report gives a 95 % interval)
#
# Every module runs in its own clone of HEAD under $MUTATION_DIR (mutmut rewrites the source in
# place, so never in your checkout), against the tests that exercise it, with pytest -x so a
# killed mutant stops at its first failing test. The runner is scripts/mutation_worker.py: a warm
# process that has TensorFlow imported and forks one pytest run per mutant (saves ~5 s each),
# narrowed to the tests that execute the mutated statement, from anywhere in the suite (one
# coverage run of the whole suite with per-test contexts, shared by all modules of a commit);
# statements run at import or unseen by coverage keep the module's own tests (MODULES).
# Results: $MUTATION_DIR/<name>/summary.txt (counts) and survivors.diff (every surviving mutant,
# one line each, as scripts/mutation_report.py --survivors prints them);
# benchmarks/MUTATION.md says what each survivor means.
#
# mutmut 3 is not usable here: it forks after running the tests in the parent and TensorFlow's
# thread pools do not survive that (every mutant times out).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MUTATION_DIR=${MUTATION_DIR:-/tmp/tf_lrp_mutation}
JOBS=${JOBS:-1}
SAMPLE=${SAMPLE:-1}

# module (path under tf_lrp/) -> the tests that exercise it, fastest and most specific first
declare -A MODULES=(
  [storage.py]="tests/test_batch.py tests/test_io.py"
  [runs/outputs.py]="tests/test_batch.py tests/test_cli.py"
  [runs/shards.py]="tests/test_batch.py tests/test_cli.py"
  [composites/files.py]="tests/test_composite_file.py tests/test_cli.py"
  [plan.py]="tests/test_engine.py tests/test_rules.py tests/test_weightless.py"
  [layers.py]="tests/test_effective_map.py tests/test_rules.py tests/test_engine.py tests/test_families.py tests/test_sequence.py"
  [rules]="tests/test_rules.py tests/test_parameters.py tests/test_effective_map.py tests/test_conservation.py tests/test_weightless.py tests/test_composite_file.py"
  [weightless.py]="tests/test_weightless.py tests/test_engine.py tests/test_rules.py"
  [recurrent.py]="tests/test_sequence.py tests/test_sequence_engine.py"
  [attention.py]="tests/test_sequence_engine.py tests/test_sequence.py tests/test_hub_lxt.py"
  [analyzer.py]="tests/test_engine.py tests/test_rules.py tests/test_parameters.py tests/test_concepts_engine.py"
  [base.py]="tests/test_engine.py tests/test_baselines.py tests/test_cli.py"
  [concepts]="tests/test_concepts_engine.py tests/test_concepts.py"
  [evaluate]="tests/test_evaluate.py tests/test_evaluate_removal.py tests/test_evaluate_randomisation.py tests/test_evaluate_report.py"
  [tuning]="tests/test_tune.py"
)
ORDER=(storage.py runs/outputs.py runs/shards.py composites/files.py plan.py layers.py rules
       weightless.py recurrent.py attention.py analyzer.py base.py concepts evaluate tuning)

one() {
  local module=$1 name=${1//\//_}
  local tests=${MODULES[$module]:?unknown module $module (see MODULES in $0)}
  local dir=$MUTATION_DIR/${name%.py}
  # always a fresh clone: mutmut 2's cache does not survive a run stopped midway
  rm -rf "$dir"
  git clone -q "$REPO" "$dir" || { echo "$module: cannot clone into $dir"; return 1; }
  cd "$dir" || return 1
  # mutmut rewrites sources in place: never anywhere but in the clone
  [ "$(pwd -P)" = "$(cd "$dir" && pwd -P)" ] || { echo "$module: not in $dir"; return 1; }
  find . -name __pycache__ -prune -exec rm -rf {} +
  # a sample: mutmut imports mutmut_config from its working directory and skips every mutant
  # whose pre_mutation hook says so; the choice hashes the mutant (file, line text, index), so
  # the same SAMPLE picks the same mutants on every run of the same source
  cat > mutmut_config.py <<EOF
import hashlib

FRACTION = $SAMPLE


def pre_mutation(context):
    m = context.mutation_id
    key = "\\n".join([m.filename, m.line.strip(), str(m.index)]).encode()
    if int(hashlib.sha256(key).hexdigest()[:8], 16) / 16**8 >= FRACTION:
        context.skip = True
EOF
  local sock=$dir/worker.sock
  python "$REPO/scripts/mutation_worker.py" serve "$sock" --coverage "$COVERAGE" \
    > worker.log 2>&1 &
  local worker=$!
  trap 'kill $worker 2>/dev/null || true' RETURN
  while ! grep -q ready worker.log 2>/dev/null; do sleep 1; done
  local runner="python $REPO/scripts/mutation_worker.py run $sock -- -x -q -p no:randomly $tests"
  mutmut run --paths-to-mutate "tf_lrp/$module" --no-progress --test-time-base 1500 \
    --runner "$runner" > mutmut.log 2>&1 || true  # mutmut exits non-zero when mutants survive
  python - "$module" <<'EOF' > summary.txt
import sqlite3, sys
rows = sqlite3.connect(".mutmut-cache").execute("select status, count(*) from mutant group by status")
counts = dict(rows.fetchall())
killed = counts.get("ok_killed", 0)
survived = counts.get("bad_survived", 0) + counts.get("ok_suspicious", 0)
timeouts = counts.get("bad_timeout", 0)  # a mutant that hangs is caught, but look at each
done = killed + survived + timeouts
print(f"{sys.argv[1]}: {killed + timeouts}/{done} killed ({100 * (killed + timeouts) / max(done, 1):.1f} %; "
      f"{timeouts} by timeout), {survived} survived, {counts.get('skipped', 0)} not in the sample, "
      f"{counts.get('untested', 0)} untested")
EOF
  python "$REPO/scripts/mutation_report.py" "$MUTATION_DIR" --survivors "$(basename "$dir")" \
    > survivors.diff || true
  cat summary.txt
}

# which tests execute which statements: the whole suite once per commit (pytest-cov, one
# context per test), in a clone of its own; about 10 minutes on one core
coverage_once() {
  local sha dir
  # COVERAGE=<file>: reuse the coverage of an earlier commit (tests added since are then not
  # chosen by narrowing, only as the module's own tests)
  [ -n "${COVERAGE:-}" ] && [ -s "$COVERAGE" ] && return 0
  sha=$(git -C "$REPO" rev-parse HEAD)
  COVERAGE=$MUTATION_DIR/coverage-$sha.json
  [ -s "$COVERAGE" ] && return 0
  dir=$MUTATION_DIR/coverage-run
  rm -rf "$dir"
  git clone -q "$REPO" "$dir"
  ( cd "$dir" && python -m pytest -q -p no:randomly --cov=tf_lrp --cov-context=test \
      --cov-report= tests > coverage.log 2>&1 || true
    python -m coverage json -q --show-contexts -o "$COVERAGE.part" && mv "$COVERAGE.part" "$COVERAGE" )
  rm -rf "$dir"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ORDER[@]}")
mkdir -p "$MUTATION_DIR"
coverage_once
running=0
for module in "${targets[@]}"; do
  ( one "$module" ) &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait
