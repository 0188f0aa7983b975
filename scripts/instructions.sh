#!/usr/bin/env bash
# Instructions per record, producer and consumer, single thread, 8-byte records, counted by
# callgrind (exact, unlike times): builds core/examples/per_record_instructions.rs, runs it
# under `valgrind --tool=callgrind` and divides each side's inclusive count by the records.
# Goals (issue 11): produce <= 40, consume <= 35 instructions per record.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 2; }
cargo build --quiet --release -p ringmap-core --example per_record_instructions
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
out=$target/callgrind.per_record.out
counts=$(valgrind --tool=callgrind --callgrind-out-file=$out \
    "$target"/release/examples/per_record_instructions 2>/dev/null | awk '{print $(NF-1), $NF}')
callgrind_annotate --inclusive=yes $out 2>/dev/null | awk -v produced="${counts% *}" -v consumed="${counts#* }" '
    /per_record_instructions::(produce_|consume_|return_space)/ {
        gsub(",", "", $1)
        name = $0; sub(/.*per_record_instructions::/, "", name); sub(/[ \[].*/, "", name)
        per = $1 / (name ~ /^produce/ ? produced : consumed)
        if (name ~ /^return_space/) { printf "%-28s %7.2f instructions per record (the walk; no goal)\n", name, per; next }
        if (name ~ /^produce_batched/) { printf "%-28s %7.2f instructions per record (write_batch of 16; no goal)\n", name, per; next }
        goal = name ~ /^produce/ ? 40 : 35
        printf "%-28s %7.2f instructions per record (goal <= %d: %s)\n", name, per, goal, (per <= goal ? "met" : "NOT met")
    }'
