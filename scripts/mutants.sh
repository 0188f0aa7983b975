#!/usr/bin/env bash
# The mutation check: applies each mutation of scripts/mutants.txt (an ordering weakened one
# step, or a check left out) to a scratch copy of the workspace under target/mutants/tree,
# runs the suite the entry names, and fails if any mutation survives (its suite still passes).
# The real tree is never edited.
#
#   scripts/mutants.sh            every entry (the full check; a few minutes on 2 cores)
#   scripts/mutants.sh --quick    only the entries marked `quick: yes` (what .ci/run runs)
#   scripts/mutants.sh --list     print the entries and what is expected to catch each
#   MUTANTS_ONLY=REGEX scripts/mutants.sh   only the entries whose name matches REGEX
#
# Entries whose `catch:` is `weakened: <reason>` are not run: the script checks instead that
# the tree holds the weaker code (`after`) and not the stronger one (`before`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
mode=full
case ${1:-} in
    --quick) mode=quick ;;
    --list) mode=list ;;
    "") ;;
    *) echo "mutants.sh: unknown option '$1' (use --quick, --list or nothing)" >&2; exit 2 ;;
esac

scratch=$root/target/mutants
tree=$scratch/tree
per_run_timeout=${MUTANTS_TIMEOUT:-600}
export CARGO_TERM_COLOR=never
# Incremental release builds: each mutation rebuilds one crate and the test binary only.
export CARGO_INCREMENTAL=1
export CARGO_PROFILE_RELEASE_LTO=false

# Reads scripts/mutants.txt into parallel arrays. Blocks are separated by blank lines;
# `before` / `after` are literal code, `\n` in them stands for a line break.
files=() befores=() afters=() catches=() quicks=() names=()
parse() {
    local file="" before="" after="" catch="" quick=no name=""
    flush() {
        if [ -n "$file" ]; then
            files+=("$file"); befores+=("$before"); afters+=("$after")
            catches+=("$catch"); quicks+=("$quick"); names+=("$name")
        fi
        file="" before="" after="" catch="" quick=no name=""
    }
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            "#"*) ;;
            "") flush ;;
            name:*) name=${line#name: } ;;
            file:*) file=${line#file: } ;;
            before:*) before=${line#before: } ;;
            after:*) after=${line#after: } ;;
            catch:*) catch=${line#catch: } ;;
            quick:*) quick=${line#quick: } ;;
            *) echo "mutants.txt: cannot read line: $line" >&2; exit 2 ;;
        esac
    done < scripts/mutants.txt
    flush
}
parse

# How many times literal $2 occurs in file $1 (`\n` in $2 is a line break).
occurrences() {
    NEEDLE=$2 perl -0777 -ne '$n = $ENV{NEEDLE}; $n =~ s/\\n/\n/g; $c = () = /\Q$n\E/g; print $c' "$1"
}

# Replaces the one occurrence of $2 by $3 in file $1.
replace() {
    NEEDLE=$2 WITH=$3 perl -0777 -pi -e '$n = $ENV{NEEDLE}; $w = $ENV{WITH}; s/\\n/\n/g for ($n, $w); s/\Q$n\E/$w/' "$1"
}

if [ "$mode" = list ]; then
    for i in "${!files[@]}"; do
        printf '%-58s %s\n' "${names[$i]}" "${catches[$i]}"
    done
    exit 0
fi

# Runs suite $1 (`unit [FILTER...]`, `loom [TEST...]`, `miri [FILTER...]`) in the scratch tree.
# Returns 0 if it passed, 1 if it failed (or timed out), 2 if it did not build.
run_suite() {
    local kind=$1; shift
    local -a build test
    case $kind in
        unit)
            build=(cargo test --offline -q -p ringmap-core --lib --no-run)
            test=(cargo test --offline -q -p ringmap-core --lib -- "$@")
            export CARGO_TARGET_DIR=$scratch/unit RUSTFLAGS= ;;
        loom)
            build=(cargo test --offline -q --release -p ringmap-core --lib --test loom --no-run)
            test=(cargo test --offline -q --release -p ringmap-core --lib --test loom -- "$@")
            export CARGO_TARGET_DIR=$scratch/loom RUSTFLAGS="--cfg loom" ;;
        miri)
            build=(cargo +nightly miri test --offline -q -p ringmap-core --lib --no-run)
            test=(cargo +nightly miri test --offline -q -p ringmap-core --lib -- "$@")
            export CARGO_TARGET_DIR=$scratch/miri RUSTFLAGS= MIRIFLAGS=-Zmiri-disable-isolation ;;
        *) echo "mutants.txt: unknown suite '$kind'" >&2; return 2 ;;
    esac
    (cd "$tree" && "${build[@]}") >"$scratch/log" 2>&1 || return 2
    if (cd "$tree" && timeout "$per_run_timeout" "${test[@]}") >>"$scratch/log" 2>&1; then
        return 0
    fi
    return 1
}

mkdir -p "$scratch"
# A copy of the working tree as it is (uncommitted changes included), without target/.
sync_tree() {
    rm -rf "$tree" && mkdir -p "$tree"
    tar -c --exclude=./target --exclude=./.git . | tar -x -C "$tree"
}
sync_tree

started=$(date +%s)
survived=() broken=() caught=0 weakened=0 ran=0
for i in "${!files[@]}"; do
    [ "$mode" = quick ] && [ "${quicks[$i]}" != yes ] && continue
    # MUTANTS_ONLY=REGEX runs only the entries whose name matches (for working on one).
    if [ -n "${MUTANTS_ONLY:-}" ] && ! [[ ${names[$i]} =~ $MUTANTS_ONLY ]]; then continue; fi
    name=${names[$i]} file=${files[$i]} catch=${catches[$i]}
    if [[ $catch == weakened:* ]]; then
        if [ "$(occurrences "$file" "${afters[$i]}")" = 1 ] && [ "$(occurrences "$file" "${befores[$i]}")" = 0 ]; then
            weakened=$((weakened + 1))
            echo "weakened  $name (${catch#weakened: })"
        else
            broken+=("$name: marked weakened, but $file does not hold the weaker code exactly once")
        fi
        continue
    fi
    count=$(occurrences "$file" "${befores[$i]}")
    if [ "$count" != 1 ]; then
        broken+=("$name: the code to mutate occurs $count times in $file (must be exactly once)")
        continue
    fi
    ran=$((ran + 1))
    t0=$(date +%s)
    replace "$tree/$file" "${befores[$i]}" "${afters[$i]}"
    read -r -a suite <<<"$catch"
    set +e
    run_suite "${suite[@]}"
    rc=$?
    set -e
    cp "$file" "$tree/$file"
    secs=$(( $(date +%s) - t0 ))
    case $rc in
        0) survived+=("$name (still passes: $catch)"); echo "SURVIVED  $name [$catch] ${secs}s"
           cp "$scratch/log" "$scratch/survived-$i.log" ;;
        1) caught=$((caught + 1)); echo "caught    $name [$catch] ${secs}s" ;;
        *) broken+=("$name: the mutated code does not build (log: target/mutants/broken-$i.log)")
           cp "$scratch/log" "$scratch/broken-$i.log"; echo "BROKEN    $name ${secs}s" ;;
    esac
done

echo
echo "mutants ($mode): $ran run, $caught caught, ${#survived[@]} survived, $weakened weakened, ${#broken[@]} broken entries, $(( $(date +%s) - started ))s"
for s in "${survived[@]}"; do echo "survived: $s"; done
for b in "${broken[@]}"; do echo "broken: $b"; done
[ ${#survived[@]} -eq 0 ] && [ ${#broken[@]} -eq 0 ]
