//! The TLA+ models in `models/ring_buffer/`, checked by `cargo test -p ringmap-models` with the
//! `tla-checker` library (the `tla` binary's engine; it reads the same TLC-style `.cfg`
//! files TLC does).
//!
//! Each safe configuration must pass; each buggy configuration must fail, and on the
//! invariant or temporal property it is named after, not merely fail. Each test also checks
//! that the checker saw every invariant and property its cfg lists (tla-checker skips an
//! operator body it cannot parse, which would otherwise turn a check into a silent pass).
//!
//! Speed: the checker is an interpreter. Built at opt-level 0, `RingBufferMP.cfg` takes
//! about ten times as long as with an optimised `tla-checker` (about 2.5 minutes instead of
//! 15 s here), so the workspace should build that one dependency optimised even in the dev
//! profile (`[profile.dev.package.tla-checker] opt-level = 3` in the root `Cargo.toml`).

// tla-checker is a Linux (non-Windows) dev-dependency: see tests/Cargo.toml.
#![cfg(not(windows))]

use std::path::{Path, PathBuf};
use std::time::Instant;

use tla_checker::checker::{CheckResult, check};
use tla_checker::load::prepare_from_path;

/// What a check ended with.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// No error in the whole state space, within the checker's limits.
    Pass,
    /// An invariant failed; its name.
    Invariant(String),
    /// A temporal property (cfg `PROPERTY`) failed; its name.
    Property(String),
    /// Anything else (deadlock, evaluation error, a limit hit, ...), described.
    Other(String),
}

struct Report {
    outcome: Outcome,
    /// States in the counterexample (0 when there is none).
    trace_len: usize,
    /// The invariants and properties the checker took from the cfg.
    invariants: Vec<String>,
    properties: Vec<String>,
    states: usize,
    /// The actions (as the checker labels them: the name of the operator in each disjunct of
    /// `Next`) that took at least one transition; only filled on a pass.
    actions: Vec<String>,
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ring_buffer")
}

fn run(spec: &str, cfg: &str) -> Report {
    let dir = models_dir();
    let started = Instant::now();
    let prepared = prepare_from_path(&dir.join(spec), Some(&dir.join(cfg)), &[])
        .unwrap_or_else(|e| panic!("{spec} with {cfg} does not load: {e}"));
    for warning in &prepared.warnings {
        eprintln!("{cfg}: warning: {}", warning.value);
    }
    let invariants: Vec<String> = prepared
        .spec
        .invariant_names
        .iter()
        .map(|n| n.as_deref().unwrap_or("(unnamed)").to_string())
        .collect();
    let properties: Vec<String> = prepared
        .checker_config
        .properties
        .iter()
        .map(|p| p.to_string())
        .collect();
    let result = check(&prepared.spec, &prepared.domains, &prepared.checker_config);
    let mut actions = Vec::new();
    let (outcome, trace_len, states) = match &result {
        CheckResult::Ok(stats) => {
            actions = stats
                .transitions_by_action
                .iter()
                .filter(|(_, count)| **count > 0)
                .filter_map(|(name, _)| name.as_deref().map(str::to_string))
                .collect();
            (Outcome::Pass, 0, stats.states_explored)
        }
        CheckResult::InvariantViolation(cex, stats) => {
            let name = invariants
                .get(cex.violated_invariant)
                .cloned()
                .unwrap_or_else(|| format!("invariant #{}", cex.violated_invariant));
            (
                Outcome::Invariant(name),
                cex.trace.len(),
                stats.states_explored,
            )
        }
        CheckResult::LivenessViolation(violation, stats) => (
            Outcome::Property(violation.property.clone()),
            violation.prefix.len() + violation.cycle.len(),
            stats.states_explored,
        ),
        CheckResult::PropertyViolation(violation, stats) => (
            Outcome::Property(violation.property.to_string()),
            violation.trace.len(),
            stats.states_explored,
        ),
        other => (Outcome::Other(describe(other)), 0, 0),
    };
    eprintln!(
        "{spec} with {cfg}: {outcome:?}, {states} states, counterexample of {trace_len} states, {:.1?}",
        started.elapsed()
    );
    Report {
        outcome,
        trace_len,
        invariants,
        properties,
        states,
        actions,
    }
}

fn describe(result: &CheckResult) -> String {
    match result {
        CheckResult::Deadlock(trace, _, _) => format!("deadlock after {} states", trace.len()),
        CheckResult::MaxStatesExceeded(_) => "the state limit was hit".into(),
        CheckResult::MaxDepthExceeded(_) => "the depth limit was hit".into(),
        CheckResult::MaxTimeExceeded(_) => "the time limit was hit".into(),
        CheckResult::NoInitialStates => "no initial states".into(),
        CheckResult::InitError(e) => format!("error in Init: {e:?}"),
        CheckResult::NextError(e, _, _) => format!("error in Next: {e:?}"),
        CheckResult::InvariantError(e, _, _) => format!("error in an invariant: {e:?}"),
        CheckResult::LivenessError(e, _) => format!("error checking liveness: {e:?}"),
        CheckResult::PrepareError(e) => format!("cannot prepare the spec: {e:?}"),
        CheckResult::RefinementViolation(..) => "refinement violation".into(),
        CheckResult::Ok(_)
        | CheckResult::InvariantViolation(..)
        | CheckResult::LivenessViolation(..)
        | CheckResult::PropertyViolation(..) => unreachable!("handled by run()"),
    }
}

const SEED_INVARIANTS: &[&str] = &[
    "TypeOK",
    "OffsetsConsistent",
    "StatusConsistent",
    "HeadersConsistent",
    "Safety",
];

const MP_INVARIANTS: &[&str] = &[
    "TypeOK",
    "OffsetsConsistent",
    "ReserveWithinValidated",
    "NoOverwriteLocked",
    "QueryCompletedAtMostOnce",
    "QueryStatesConsistent",
    "QueryCompletesOnCommittedHead",
    "OneOwner",
    "OffersAreFresh",
    "NoClaimLost",
    "QuiescentIsPublished",
    "PublishedEndSound",
];

const MP_PROPERTIES: &[&str] = &["NoLostWakeup", "CancelledQueryCompletes", "ClaimsPublished"];

/// The steps of the combining publish that every multi-producer configuration with an
/// offer table of 2 slots takes: a claim that is next is owned at once, one that is not is
/// offered; the re-check finds the producer offset elsewhere (done) or at its start (the
/// reclaim, which wins or finds the offer taken); an owner publishes and takes an offer.
const COMBINING_ACTIONS: &[&str] = &[
    "PubCheck",
    "Offer",
    "Recheck",
    "Reclaim",
    "Advance",
    "Combine",
    "StoreEnd",
    "CheckArmedRange",
];

/// Every action of the design is taken somewhere in the state space: a guard that can never
/// hold (or a step whose primed assignments contradict each other) would otherwise leave a
/// part of the model unchecked while the configuration still passes.
fn assert_actions_taken(report: &Report, actions: &[&str]) {
    let missing: Vec<&str> = actions
        .iter()
        .copied()
        .filter(|a| !report.actions.iter().any(|t| t == a))
        .collect();
    assert!(
        missing.is_empty(),
        "actions never taken: {missing:?} (taken: {:?})",
        report.actions
    );
}

fn assert_checked(report: &Report, invariants: &[&str], properties: &[&str]) {
    assert_eq!(
        report.invariants, invariants,
        "invariants the checker took from the cfg"
    );
    assert_eq!(
        report.properties, properties,
        "properties the checker took from the cfg"
    );
}

/// The seed's safe configuration passes.
#[test]
fn seed_model_safe_passes() {
    let report = run("RingBufferModel.tla", "RingBufferModel.cfg");
    assert_checked(&report, SEED_INVARIANTS, &[]);
    assert_eq!(report.outcome, Outcome::Pass);
    assert!(
        report.states > 1000,
        "the safe model explores a real state space"
    );
    assert_actions_taken(
        &report,
        &[
            "ReserveAndLock",
            "Publish",
            "Submit",
            "Discard",
            "ConsumerRead",
            "ConsumerDone",
            "ReturnSpace",
            "QueryArm",
            "QueryComplete",
        ],
    );
}

/// The seed's buggy configuration fails `Safety`, with a short counterexample: reserve and
/// publish at once, then the consumer reads the stale header as a committed record.
#[test]
fn seed_model_publish_before_lock_fails_safety() {
    let report = run(
        "RingBufferModel.tla",
        "RingBufferModel_buggy_publish_before_lock.cfg",
    );
    assert_checked(&report, SEED_INVARIANTS, &[]);
    assert_eq!(report.outcome, Outcome::Invariant("Safety".into()));
    assert!(
        report.trace_len <= 4,
        "counterexample of {} states",
        report.trace_len
    );
}

/// The multi-producer model's safe configuration passes every invariant and every liveness
/// property, with the combining publish (an offer table of 2 slots).
#[test]
fn mp_model_safe_passes() {
    let report = run("RingBufferMP.tla", "RingBufferMP.cfg");
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Pass);
    assert!(
        report.states > 10_000,
        "the safe model explores a real state space"
    );
    assert_actions_taken(&report, COMBINING_ACTIONS);
    assert_actions_taken(
        &report,
        &[
            "Reserve",
            "Lock",
            "Submit",
            "Discard",
            "CheckArmed",
            "Wake",
            "Walk",
            "UserWrite",
            "QueryStart",
            "QueryRecheck",
            "Cancel",
            "CancelRoutine",
        ],
    );
}

/// Batched writes (`Ring::write_batch`): one claim, committed headers written before one
/// publish, one check of `armed` over the records published. Every invariant and property
/// holds with batches of 2 beside single records in a ring of 2 slots that wraps (where a
/// batch is never claimed behind an unpublished record, so nothing is offered).
#[test]
fn mp_batched_writes_pass() {
    let report = run("RingBufferMP.tla", "RingBufferMP_batch.cfg");
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Pass);
    assert_actions_taken(
        &report,
        &[
            "Reserve",
            "ReserveBatch",
            "WriteBatch",
            "PubCheck",
            "Advance",
            "Combine",
            "CheckArmedRange",
            "Wake",
            "Walk",
            "QueryStart",
            "QueryRecheck",
        ],
    );
}

/// Batches in the combining publish (a ring of 3 slots): a batch offered behind a single
/// record is taken by that record's owner, a batch's owner takes a single record's offer and
/// its one check of `armed` covers it. Every invariant and property holds.
#[test]
fn mp_batches_combine_pass() {
    let report = run("RingBufferMP.tla", "RingBufferMP_batch_combine.cfg");
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Pass);
    assert_actions_taken(&report, COMBINING_ACTIONS);
    assert_actions_taken(
        &report,
        &[
            "Reserve",
            "ReserveBatch",
            "WriteBatch",
            "Wake",
            "QueryRecheck",
        ],
    );
}

/// An offer table of one slot: offers collide. A producer whose offer finds the slot held by
/// another claim's joins an offer that ends at its start (`Extend`; a reclaim then takes the
/// grown offer), or, if none does, looks at the producer offset and tries its slot again
/// (`FallbackWait`). Every invariant and property holds, `ClaimsPublished` among them
/// (nobody waits forever).
#[test]
fn mp_offer_collisions_pass() {
    let report = run("RingBufferMP.tla", "RingBufferMP_collide.cfg");
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Pass);
    assert_actions_taken(&report, COMBINING_ACTIONS);
    assert_actions_taken(&report, &["Extend", "FallbackWait", "Wake", "QueryRecheck"]);
}

/// A producer that offers its claim and is done, without re-checking the producer offset:
/// the owner that reached its start looked at the table before the offer landed, and
/// nobody ever publishes the claim.
#[test]
fn mp_offer_without_recheck_strands_a_claim() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_offer_without_recheck.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("QuiescentIsPublished".into())
    );
}

/// A reclaim by a plain store instead of a compare-and-swap takes the claim back even after
/// a combining owner took it: two owners publish it.
#[test]
fn mp_reclaim_by_plain_store_fails_one_owner() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_reclaim_by_plain_store.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Invariant("OneOwner".into()));
}

/// Producers whose checks of `armed` do not look whether the head is published and committed:
/// an owner's check after its publish finds the query waiting for a record still LOCKED and
/// completes it.
#[test]
fn mp_wake_without_commit_check_fails_committed_head() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_wake_without_commit_check.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("QueryCompletesOnCommittedHead".into())
    );
}

/// A batched write that checks `armed` against its last record only misses a query armed
/// for its first record before the publish: a wake-up is lost.
#[test]
fn mp_batch_checking_its_last_record_only_loses_a_wakeup() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_batch_wake_checks_last.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Property("NoLostWakeup".into()));
}

/// Producers that check free space against the user's consumer offset reserve over a
/// record another producer still holds LOCKED.
#[test]
fn mp_trust_user_consumer_offset_fails_no_overwrite_locked() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_trust_user_consumer_offset.cfg",
    );
    // ReserveWithinValidated is the lemma this bug breaks on the way; the cfg leaves it out.
    let invariants: Vec<&str> = MP_INVARIANTS
        .iter()
        .copied()
        .filter(|i| *i != "ReserveWithinValidated")
        .collect();
    assert_checked(&report, &invariants, MP_PROPERTIES);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("NoOverwriteLocked".into())
    );
}

/// A waker that completes the request whatever `WdfRequestUnmarkCancelable` said races the
/// cancel routine: the request is completed twice.
#[test]
fn mp_cancel_double_complete_fails_at_most_once() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_cancel_double_complete.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("QueryCompletedAtMostOnce".into())
    );
}

/// The producer loads `armed` before its commit store: a wake-up is lost.
#[test]
fn mp_check_before_commit_loses_a_wakeup() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_lost_wakeup_check_before_commit.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Property("NoLostWakeup".into()));
}

/// The re-check after arming looks only at the head's slot, which a producer may have
/// reserved again after a walk passed the head: a wake-up is lost. (Ring::arm_query's
/// re-check as first written, fixed since; see models/ring_buffer/CONFORMANCE.md.)
#[test]
fn mp_recheck_of_a_reused_slot_loses_a_wakeup() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_lost_wakeup_recheck_reused_slot.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Property("NoLostWakeup".into()));
}

/// The QUERY handler arms without re-checking the head: a wake-up is lost.
#[test]
fn mp_arm_without_recheck_loses_a_wakeup() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_lost_wakeup_arm_without_recheck.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Property("NoLostWakeup".into()));
}

/// Completing on producer > consumer wakes the consumer on a head that is still LOCKED.
#[test]
fn mp_complete_on_producer_ahead_fails_committed_head() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_complete_on_producer_ahead.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("QueryCompletesOnCommittedHead".into())
    );
}

/// A waker that completes whatever request is pending, without `disarm_query_for` of its own
/// record: a newer request completes on a head nobody committed (judged on the request's
/// head).
#[test]
fn mp_wake_without_disarm_fails_committed_head() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_wake_without_disarm.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("QueryCompletesOnCommittedHead".into())
    );
}

/// A waker that does not take the query lock disarms between the handler's arm and its
/// pend; the handler's `disarm_query_for` then fails and it pends with nothing armed.
#[test]
fn mp_wake_without_lock_loses_a_wakeup() {
    let report = run(
        "RingBufferMP.tla",
        "RingBufferMP_buggy_wake_without_lock.cfg",
    );
    assert_checked(&report, MP_INVARIANTS, MP_PROPERTIES);
    assert_eq!(report.outcome, Outcome::Property("NoLostWakeup".into()));
}

const HANDOVER_INVARIANTS: &[&str] = &[
    "TypeOK",
    "OffsetsConsistent",
    "GateConsistent",
    "HandoverExact",
    "NoStaleInfluence",
    "NoLoss",
];

/// The consumer-handover model's safe configuration (the design of issue 8) passes, and
/// every action, among them each step of the gated walk and of the retire, is taken.
#[test]
fn handover_model_safe_passes() {
    let report = run("ConsumerHandover.tla", "ConsumerHandover.cfg");
    assert_checked(&report, HANDOVER_INVARIANTS, &[]);
    assert_eq!(report.outcome, Outcome::Pass);
    assert!(
        report.states > 5_000,
        "the safe model explores a real state space"
    );
    assert_actions_taken(
        &report,
        &[
            "ReserveAndLock",
            "Publish",
            "Submit",
            "WalkEnter",
            "WalkCheck",
            "WalkLoad",
            "WalkCas",
            "Map",
            "Read",
            "Return",
            "QueryStart",
            "QueryEnter",
            "QueryCheck",
            "QueryWalk",
            "Unmap",
            "Crash",
            "RetireWalk",
            "RetireDetach",
            "RetireDrain",
            "RetireFinal",
            "FormerWrite",
            "ForeignQuery",
        ],
    );
}

/// One consumer page for every mapping: a former consumer's write into it moves the
/// validated offset past what the next consumer returned.
#[test]
fn handover_shared_consumer_page_fails_no_stale_influence() {
    let report = run(
        "ConsumerHandover.tla",
        "ConsumerHandover_buggy_shared_consumer_page.cfg",
    );
    assert_checked(&report, HANDOVER_INVARIANTS, &[]);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("NoStaleInfluence".into())
    );
    assert!(
        report.trace_len <= 14,
        "counterexample of {} states",
        report.trace_len
    );
}

/// A QUERY from a handle that is not the mapping walks its offset: the validated offset
/// passes records the consumer has not read.
#[test]
fn handover_query_from_any_handle_fails_no_stale_influence() {
    let report = run(
        "ConsumerHandover.tla",
        "ConsumerHandover_buggy_query_from_any_handle.cfg",
    );
    assert_checked(&report, HANDOVER_INVARIANTS, &[]);
    assert_eq!(
        report.outcome,
        Outcome::Invariant("NoStaleInfluence".into())
    );
    assert!(
        report.trace_len <= 6,
        "counterexample of {} states",
        report.trace_len
    );
}

/// A retire that takes its final offset without waiting for the walkers in the gate: a walk
/// that passed the gate's check before the detach lands after the final.
#[test]
fn handover_map_without_drain_fails_handover_exact() {
    let report = run(
        "ConsumerHandover.tla",
        "ConsumerHandover_buggy_map_without_drain.cfg",
    );
    assert_checked(&report, HANDOVER_INVARIANTS, &[]);
    assert_eq!(report.outcome, Outcome::Invariant("HandoverExact".into()));
    assert!(
        report.trace_len <= 14,
        "counterexample of {} states",
        report.trace_len
    );
}

/// A gate that checks only that some mapping is attached: a QUERY that took the old
/// mapping's generation enters after the next consumer mapped and walks the old offset into
/// it.
#[test]
fn handover_gate_without_generation_fails_handover_exact() {
    let report = run(
        "ConsumerHandover.tla",
        "ConsumerHandover_buggy_gate_without_generation.cfg",
    );
    assert_checked(&report, HANDOVER_INVARIANTS, &[]);
    assert_eq!(report.outcome, Outcome::Invariant("HandoverExact".into()));
    assert!(
        report.trace_len <= 16,
        "counterexample of {} states",
        report.trace_len
    );
}

/// Every `.cfg` in the directory is covered by a test above.
#[test]
fn every_cfg_is_checked() {
    let mut cfgs: Vec<String> = std::fs::read_dir(models_dir())
        .expect("models/ring_buffer exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cfg"))
        .collect();
    cfgs.sort();
    assert_eq!(
        cfgs,
        [
            "ConsumerHandover.cfg",
            "ConsumerHandover_buggy_gate_without_generation.cfg",
            "ConsumerHandover_buggy_map_without_drain.cfg",
            "ConsumerHandover_buggy_query_from_any_handle.cfg",
            "ConsumerHandover_buggy_shared_consumer_page.cfg",
            "RingBufferMP.cfg",
            "RingBufferMP_batch.cfg",
            "RingBufferMP_batch_combine.cfg",
            "RingBufferMP_buggy_batch_wake_checks_last.cfg",
            "RingBufferMP_buggy_cancel_double_complete.cfg",
            "RingBufferMP_buggy_complete_on_producer_ahead.cfg",
            "RingBufferMP_buggy_lost_wakeup_arm_without_recheck.cfg",
            "RingBufferMP_buggy_lost_wakeup_check_before_commit.cfg",
            "RingBufferMP_buggy_lost_wakeup_recheck_reused_slot.cfg",
            "RingBufferMP_buggy_offer_without_recheck.cfg",
            "RingBufferMP_buggy_reclaim_by_plain_store.cfg",
            "RingBufferMP_buggy_trust_user_consumer_offset.cfg",
            "RingBufferMP_buggy_wake_without_commit_check.cfg",
            "RingBufferMP_buggy_wake_without_disarm.cfg",
            "RingBufferMP_buggy_wake_without_lock.cfg",
            "RingBufferMP_collide.cfg",
            "RingBufferModel.cfg",
            "RingBufferModel_buggy_publish_before_lock.cfg",
        ]
    );
}
