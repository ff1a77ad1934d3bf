#!/usr/bin/env bash
# Mutation testing of the durability core, on demand (docs/mutation-testing.md).
#
#   bash scripts/mutants.sh rust [FILE...]              cargo-mutants over rust/openmatch-aof
#   bash scripts/mutants.sh python [MODULE|MUTANT...]   mutmut over the SQLite store,
#                                                       flusher, recovery, compaction
#   bash scripts/mutants.sh python store/postgres.py [MUTANT...]
#                                                       mutmut over the PostgreSQL store
#                                                       (needs the server at DATABASE_URL)
#   bash scripts/mutants.sh sample                      the small fast Rust sample
#   bash scripts/mutants.sh sample-python               the Python sample CI runs (about 30 s)
#
# Needs cargo-mutants (`cargo install --locked cargo-mutants`) and mutmut
# (in requirements-dev.txt). One job at a time (the machine is shared;
# in place, cargo-mutants runs one mutant at a time anyway).
# The Rust run mutates the tree in place (no copy, no rebuild from scratch)
# and refuses to start with uncommitted changes under rust/; cargo-mutants
# puts every file back when it ends, and the script checks that it did.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$root/.venv/bin:$HOME/.cargo/bin:$PATH"
# A mutant's failing proptest cases are not regressions of the real code.
export PROPTEST_DISABLE_FAILURE_PERSISTENCE=1

# The durability core, each file with the tests that should kill its mutants
# (cargo test arguments; the slow scaling and perf targets are left out).
declare -A RUST_TESTS=(
    [rust/openmatch-aof/src/codec.rs]="--lib --test roundtrip_props --test interop"
    [rust/openmatch-aof/src/scanner.rs]="--lib --test scanner --test tail"
    [rust/openmatch-aof/src/writer/group_commit.rs]="--lib --test writer"
    [rust/openmatch-aof/src/writer/mod.rs]="--lib --test writer"
    [rust/openmatch-aof/src/writer/policy.rs]="--lib --test writer"
    [rust/openmatch-aof/src/writer/recover.rs]="--lib --test writer --test tail"
    [rust/openmatch-aof/src/state/judge.rs]="--lib --test state --test state_model"
    [rust/openmatch-aof/src/state/mod.rs]="--lib --test state --test state_model"
    [rust/openmatch-aof/src/state/undo.rs]="--lib --test state --test state_model --test bounded_state --test journal"
    [rust/openmatch-aof/src/cut.rs]="--lib"
    [rust/openmatch-aof/src/repair.rs]="--lib"
    [rust/openmatch-aof/src/journal/mod.rs]="--lib --test journal"
    [rust/openmatch-aof/src/journal/replay.rs]="--lib --test journal"
    [rust/openmatch-aof/src/spare.rs]="--lib --test journal --test writer"
)
RUST_ORDER=(
    rust/openmatch-aof/src/codec.rs
    rust/openmatch-aof/src/writer/policy.rs
    rust/openmatch-aof/src/writer/group_commit.rs
    rust/openmatch-aof/src/writer/mod.rs
    rust/openmatch-aof/src/writer/recover.rs
    rust/openmatch-aof/src/scanner.rs
    rust/openmatch-aof/src/state/judge.rs
    rust/openmatch-aof/src/state/mod.rs
    rust/openmatch-aof/src/state/undo.rs
    rust/openmatch-aof/src/journal/mod.rs
    rust/openmatch-aof/src/journal/replay.rs
    rust/openmatch-aof/src/cut.rs
    rust/openmatch-aof/src/repair.rs
    rust/openmatch-aof/src/spare.rs
)

rust() {
    if ! git diff --quiet -- rust/; then
        echo "mutants: commit or stash the changes under rust/ first (the run mutates in place)" >&2
        exit 2
    fi
    local files=("$@")
    [ ${#files[@]} -gt 0 ] || files=("${RUST_ORDER[@]}")
    local status=0
    for file in "${files[@]}"; do
        local tests=${RUST_TESTS[$file]:-"--lib"}
        echo "=== cargo mutants: $file ($tests)"
        local out
        out="target/mutants/$(basename "$(dirname "$file")")-$(basename "$file" .rs)"
        mkdir -p "$out"
        # shellcheck disable=SC2086  # the test arguments are words
        cargo mutants --in-place --timeout "${MUTANTS_TIMEOUT:-30}" \
            --package openmatch-aof --file "$file" \
            --output "$out" \
            -- $tests || status=$?
        git diff --quiet -- rust/ || { echo "mutants: $file was not restored" >&2; exit 3; }
    done
    return $status
}

# The Python modules and the tests that exercise them, in process (mutmut
# sees only what runs in its own interpreter: a test that runs the CLI in a
# subprocess kills nothing). Each mutant runs only the tests that reached
# its function, fastest first, so more files cost a longer first (stats)
# pass, not longer mutants. SQLite only: the PostgreSQL tests (marked
# `postgres`, and the `[postgres]` cases of the stores' shared tests) are
# left out, so store/postgres.py is not mutated here; so are tests
# that spend their time outside the mutated code (a 20 s timing test of the
# flusher's back-pressure, kill -9 children, a mypy run).
PY_MODULES=(compaction.py recovery.py flusher.py store/sqlite.py store/base.py)
PY_TESTS=(
    tests/test_store.py tests/test_store_rows.py tests/test_store_validate.py
    tests/test_flusher.py tests/test_flusher_state.py tests/test_recovery_start.py
    tests/test_persistence.py tests/test_faults_store.py tests/test_faults_io.py
    tests/test_async_persistence.py tests/test_journal.py tests/test_identity.py tests/test_cli.py
    tests/test_schemas.py::test_schema_names_are_plain_identifiers  # needs no server
)
PY_DESELECT=(
    tests/test_persistence.py::test_appends_wait_for_a_slow_flusher_but_not_for_a_failing_database
    tests/test_async_persistence.py::test_kill_9_under_asyncio_load_loses_nothing_acknowledged
    tests/test_async_persistence.py::test_user_code_of_the_whole_api_type_checks_strictly
    tests/test_cli.py::test_an_sqlite_file_locked_by_another_process_fails_at_once
)
PY_SELECT=(-m "not postgres and not slow and not soak" -k "not postgres")

# store/postgres.py alone, with every test of these files that reaches it
# in process (the stats pass finds which; the SQLite ones never run for a
# mutant), against the server at DATABASE_URL. Left out: the tests that stop
# or restart the server (test_faults_db.py, test_flusher_pg.py's restart,
# marked slow) and the kill -9 ones: a restart under the run would fail
# every mutant's tests and report it killed; and the migration and sqlx
# tests (the migrator and child processes, not the store).
PG_TESTS=(
    tests/test_store.py tests/test_store_rows.py tests/test_store_validate.py
    tests/test_store_pool.py tests/test_flusher_pg.py tests/test_schemas.py
    tests/test_schema_limits.py tests/test_identity.py
    tests/test_persistence.py tests/test_flusher.py
)
PG_DESELECT=("${PY_DESELECT[0]}")
PG_SELECT=(-m "not slow and not soak")

pg_answers() {
    "$root/.venv/bin/python" -c '
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=5).close()
except psycopg.Error as e:
    sys.exit(f"{type(e).__name__}: {e}".strip())
' "$1"
}

pg_sql() {  # runs one statement; prints the first column of the first row, if any
    "$root/.venv/bin/python" -c '
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    cur = c.execute(sys.argv[2])
    if cur.description:
        print(cur.fetchone()[0])
' "$1" "$2"
}

python_pg() {
    # Each run's tests work in a database of their own, made here beside
    # the one DATABASE_URL names and dropped at the end, with whatever
    # schemas a timed-out mutant's test could not drop.
    PG_ADMIN_URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
    if ! pg_answers "$PG_ADMIN_URL"; then
        echo "mutants: PostgreSQL at $PG_ADMIN_URL does not answer: not starting (each" \
            "mutant's tests would fail, and count as killing it). Start it first:" \
            "pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" >&2
        exit 2
    fi
    PG_RUN_DB="mutmut_$(date +%s)_$$"
    local base=${PG_ADMIN_URL%%\?*} run_url
    run_url="${base%/*}/$PG_RUN_DB"
    [ "$base" = "$PG_ADMIN_URL" ] || run_url="$run_url?${PG_ADMIN_URL#*\?}"
    local started
    started=$(pg_sql "$PG_ADMIN_URL" "SELECT pg_postmaster_start_time()")
    pg_sql "$PG_ADMIN_URL" "CREATE DATABASE $PG_RUN_DB"
    trap 'pg_sql "$PG_ADMIN_URL" "DROP DATABASE IF EXISTS $PG_RUN_DB WITH (FORCE)"' EXIT
    echo "mutants: the tests run in database $PG_RUN_DB (dropped at the end)"
    PY_MODULES=(store/postgres.py)
    PY_TESTS=("${PG_TESTS[@]}")
    PY_DESELECT=("${PG_DESELECT[@]}")
    PY_SELECT=("${PG_SELECT[@]}")
    local status=0
    DATABASE_URL=$run_url MUTMUT_STAGE=${MUTMUT_STAGE:-$root/target/mutmut-pg} \
        python_run "$@" || status=$?
    # A server that went away under the run (down, or restarted) failed the
    # tests of the mutants run meanwhile: their verdicts say nothing.
    if ! pg_answers "$run_url" \
        || [ "$(pg_sql "$run_url" "SELECT pg_postmaster_start_time()")" != "$started" ]; then
        echo "mutants: PostgreSQL stopped or restarted during the run: its kills are not" \
            "to be trusted; run it again (MUTMUT_FRESH=1)" >&2
        exit 3
    fi
    return $status
}

python() {
    # store/postgres.py runs on its own, against the server (python_pg).
    local pg=0 other=0
    for m in "$@"; do
        case $m in
            store/postgres.py | openmatch_persistence.store.postgres.*) pg=1 ;;
            *) other=1 ;;
        esac
    done
    if [ $pg = 1 ]; then
        if [ $other = 1 ]; then
            echo "mutants: store/postgres.py runs alone (its own tests, stage and database)" >&2
            exit 2
        fi
        python_pg "$@"
    else
        python_run "$@"
    fi
}

python_run() {
    # Every module is mutated; the arguments (modules, as in PY_MODULES, or
    # mutant names and globs of them) choose which mutants run now. The
    # stage is kept between runs (its results stand until a run names them
    # again) unless MUTMUT_FRESH=1.
    local globs=()
    for m in "$@"; do
        case $m in
            *.py) m=${m%.py}; globs+=("openmatch_persistence.${m//\//.}.*") ;;
            *) globs+=("$m") ;;  # a mutant's name (mutmut results), or a glob of names
        esac
    done
    # mutmut imports the mutated package from mutants/src: a staging copy
    # with the package under src/, and the built _core from the installed wheel.
    local stage=${MUTMUT_STAGE:-$root/target/mutmut}
    [ "${MUTMUT_FRESH:-0}" = 1 ] && rm -rf "$stage"
    mkdir -p "$stage/src"
    rsync -a --delete python/openmatch_persistence "$stage/src/"
    cp "$(.venv/bin/python -c 'import openmatch_persistence._core as c; print(c.__file__)')" \
        "$stage/src/openmatch_persistence/"
    rsync -a --delete tests "$stage/"
    cp pyproject.toml "$stage/"
    {
        echo "[mutmut]"
        echo "source_paths = src/openmatch_persistence"
        # A mutant that stops the flusher's thread makes appends wait for it
        # forever, asleep: mutmut's CPU limit never fires, and its wall limit
        # is half of it, (tests' time + 1 s) x 15 x 2. Three times the
        # tests' time is plenty on a quiet machine, not minutes per hang.
        echo "timeout_multiplier = ${MUTMUT_TIMEOUT_MULTIPLIER:-3}"
        printf 'only_mutate =\n'
        for m in "${PY_MODULES[@]}"; do printf '    src/openmatch_persistence/%s\n' "$m"; done
        printf 'pytest_add_cli_args_test_selection =\n'
        for t in "${PY_TESTS[@]}"; do printf '    %s\n' "$t"; done
        printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n'
        for a in "${PY_SELECT[@]}"; do printf '    %s\n' "$a"; done
        for t in "${PY_DESELECT[@]}"; do printf '    --deselect\n    %s\n' "$t"; done
    } > "$stage/setup.cfg"
    sed -i '/^\[tool.mutmut\]/,/^\[/d' "$stage/pyproject.toml"
    # mutmut maps only *new* tests to the functions they reach; a changed
    # test would keep its old map. Stats cost one pass of the tests: redo them.
    rm -f "$stage/mutants/mutmut-stats.json"
    (cd "$stage" && nice -n 10 mutmut run --max-children "${MUTMUT_CHILDREN:-1}" "${globs[@]}" \
        && mutmut results) | tee "$stage.log"
}

sample() {
    # A few hundred mutants of the fsync policy and the Python compaction
    # policy: minutes, not hours. Survivors fail the sample.
    rust rust/openmatch-aof/src/writer/policy.rs
}

sample_python() {
    # CI's sample: every mutant of compaction.py (the policy that decides
    # when segments may go) against the tests of tests/test_persistence.py,
    # about a minute with mutmut installed. Survivors other than the
    # listed equivalent ones fail it.
    PY_MODULES=(compaction.py)
    PY_TESTS=(tests/test_persistence.py)
    PY_DESELECT=(tests/test_persistence.py::test_appends_wait_for_a_slow_flusher_but_not_for_a_failing_database)
    MUTMUT_FRESH=1 MUTMUT_STAGE="$root/target/mutmut-sample" python_run compaction.py
    local survivors
    survivors=$(cd "$root/target/mutmut-sample" && mutmut results 2>/dev/null \
        | awk -F: '/: survived/ {gsub(/^ +/, "", $1); print $1}')
    # A survivor that only wraps a log message's text in XX..XX is
    # equivalent (docs/mutation-testing.md: the tests check a log line's
    # numbers, not its words); any other fails the sample.
    local unexpected=()
    for m in $survivors; do
        (cd "$root/target/mutmut-sample" && mutmut show "$m") | "$root/.venv/bin/python" -c '
import sys
lines = sys.stdin.read().splitlines()
old = [l[1:] for l in lines if l.startswith("-") and not l.startswith("---")]
new = [l[1:] for l in lines if l.startswith("+") and not l.startswith("+++")]
sys.exit(0 if len(old) == len(new) == 1 and new[0].replace("XX", "") == old[0] else 1)
' || unexpected+=("$m")
    done
    if [ ${#unexpected[@]} -gt 0 ]; then
        echo "mutants: survivors in the sample: ${unexpected[*]}" >&2
        return 1
    fi
    echo "mutants: sample clean (no survivor but log-text ones)"
}

case "${1:-}" in
    rust) shift; rust "$@" ;;
    python) shift; python "$@" ;;
    sample) sample ;;
    sample-python) sample_python ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
esac
