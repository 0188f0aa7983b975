#!/bin/sh
# Checks every configuration of the ring buffer models with the `tla` binary of the
# tla-checker crate (no Java needed) and asserts the expected outcome: each safe
# configuration passes, each buggy one fails on the invariant or property it is named after.
#
#   cargo install --locked tla-checker --version 0.24.11   # once; puts `tla` in ~/.cargo/bin
#   models/ring_buffer/check.sh                            # from anywhere
#
# `cargo test -p ringmap-models` asserts the same through the library.
# Set TLA to use another binary. Exits non-zero on the first unexpected outcome.
set -eu

SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SELF")"
TLA=${TLA:-tla}
if ! command -v "$TLA" >/dev/null 2>&1; then
    echo "check.sh: '$TLA' not found; install it with: cargo install --locked tla-checker --version 0.24.11" >&2
    exit 2
fi

failed=0

# expect SPEC CFG OUTCOME, where OUTCOME is `pass`, `invariant:NAME` or `property:NAME`.
expect() {
    spec=$1 cfg=$2 want=$3
    start=$(date +%s)
    if out=$("$TLA" "$spec" --config "$cfg" 2>&1); then rc=0; else rc=$?; fi
    secs=$(( $(date +%s) - start ))
    case $want in
        pass)
            if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q '^Model checking complete. No errors found.'; then
                got=ok
            else
                got=bad
            fi ;;
        invariant:*)
            name=${want#invariant:}
            if [ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -Eq "^Invariant [0-9]+ \($name\) violated!"; then
                got=ok
            else
                got=bad
            fi ;;
        property:*)
            name=${want#property:}
            if [ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -Eq "^(Liveness property|Property) violated: $name\$"; then
                got=ok
            else
                got=bad
            fi ;;
        *)
            echo "check.sh: bad expectation '$want'" >&2; exit 2 ;;
    esac
    if [ "$got" = ok ]; then
        echo "ok    $cfg: $want (${secs}s)"
    else
        echo "FAIL  $cfg: expected $want, tla exited $rc; its report:" >&2
        printf '%s\n' "$out" | grep -E 'violated|No errors|error|Error|exceeded|limit|Deadlock' >&2 || true
        failed=1
    fi
}

expect RingBufferModel.tla RingBufferModel.cfg                                pass
expect RingBufferModel.tla RingBufferModel_buggy_publish_before_lock.cfg      invariant:Safety
expect RingBufferMP.tla    RingBufferMP.cfg                                   pass
expect RingBufferMP.tla    RingBufferMP_buggy_trust_user_consumer_offset.cfg  invariant:NoOverwriteLocked
expect RingBufferMP.tla    RingBufferMP_buggy_cancel_double_complete.cfg      invariant:QueryCompletedAtMostOnce
expect RingBufferMP.tla    RingBufferMP_buggy_lost_wakeup_check_before_commit.cfg property:NoLostWakeup
expect RingBufferMP.tla    RingBufferMP_buggy_lost_wakeup_arm_without_recheck.cfg property:NoLostWakeup
expect RingBufferMP.tla    RingBufferMP_buggy_lost_wakeup_recheck_reused_slot.cfg property:NoLostWakeup
expect RingBufferMP.tla    RingBufferMP_buggy_complete_on_producer_ahead.cfg  invariant:QueryCompletesOnCommittedHead
expect RingBufferMP.tla    RingBufferMP_buggy_wake_without_disarm.cfg         invariant:QueryCompletesOnCommittedHead
expect RingBufferMP.tla    RingBufferMP_buggy_wake_without_lock.cfg           property:NoLostWakeup
expect RingBufferMP.tla    RingBufferMP_batch.cfg                             pass
expect RingBufferMP.tla    RingBufferMP_buggy_batch_wake_checks_last.cfg      property:NoLostWakeup
expect RingBufferMP.tla    RingBufferMP_batch_combine.cfg                     pass
expect RingBufferMP.tla    RingBufferMP_collide.cfg                           pass
expect RingBufferMP.tla    RingBufferMP_buggy_offer_without_recheck.cfg       invariant:QuiescentIsPublished
expect RingBufferMP.tla    RingBufferMP_buggy_reclaim_by_plain_store.cfg      invariant:OneOwner
expect RingBufferMP.tla    RingBufferMP_buggy_wake_without_commit_check.cfg   invariant:QueryCompletesOnCommittedHead
expect ConsumerHandover.tla ConsumerHandover.cfg                           pass
expect ConsumerHandover.tla ConsumerHandover_buggy_shared_consumer_page.cfg invariant:NoStaleInfluence
expect ConsumerHandover.tla ConsumerHandover_buggy_query_from_any_handle.cfg invariant:NoStaleInfluence
expect ConsumerHandover.tla ConsumerHandover_buggy_map_without_drain.cfg invariant:HandoverExact
expect ConsumerHandover.tla ConsumerHandover_buggy_gate_without_generation.cfg invariant:HandoverExact

# Every cfg here must have an expectation above.
for cfg in *.cfg; do
    grep -q "^expect [A-Za-z]*\.tla *$cfg " "$SELF" || { echo "FAIL  $cfg has no expectation in check.sh" >&2; failed=1; }
done

exit $failed
