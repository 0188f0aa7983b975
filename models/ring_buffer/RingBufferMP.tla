----------------------------- MODULE RingBufferMP -----------------------------
(***************************************************************************)
(* The ring beyond the seed's limits: several producers, a hostile         *)
(* consumer, the kernel's validated consumer offset, and the async query   *)
(* with its arm / check handshake and its cancel / complete race.          *)
(*                                                                          *)
(* Producers (lock-free; core/src/producer.rs):                             *)
(*   Reserve   CAS the reserve offset forward, checking space against the   *)
(*             validated consumer offset (never the consumer's own value);  *)
(*   Lock      write the header with LOCKED set;                            *)
(*   Publish   wait until producer offset = my start, then store my end,    *)
(*             so offsets are published in reservation order;               *)
(*   Commit    submit or discard: one store of the header (in any order     *)
(*             between producers);                                          *)
(*   Check     one load of `armed`: if it is my start + 1, a query waits    *)
(*             for my record: go and Wake it;                               *)
(*   Wake      the host's wake-up, under the query lock: disarm if still    *)
(*             armed for my record, take the request from the cancel        *)
(*             machinery (WdfRequestUnmarkCancelable) and complete it.      *)
(*   Batch     (Ring::write_batch; `Batch` records at once, 0: none) one    *)
(*             CAS claims them all (ReserveBatch); the payloads are copied  *)
(*             and every header is written committed (WriteBatch), then one *)
(*             publish (PublishBatch: wait for producer offset = my start,  *)
(*             store my end) commits them all; then one load of `armed`:    *)
(*             if it names any of my records, Wake it (CheckArmedBatch).    *)
(*   Walk      a producer that finds the ring full advances the validated   *)
(*             consumer offset over committed headers toward                *)
(*             min(consumer page, producer offset).                         *)
(*                                                                          *)
(* The consumer page is writable by the consumer's process: `userConsumer`  *)
(* takes any value at any time.  The kernel keeps `validated`, which moves  *)
(* only by walking committed headers (core/src/consumer_offset.rs).        *)
(*                                                                          *)
(* QUERY (one request at a time, any number one after another), run by the *)
(* host's handler, which holds the query lock from start to pend:          *)
(*   Start     walk `validated` toward the request's consumer offset, take  *)
(*             the head (the new validated offset), arm: armed := head + 1; *)
(*   Recheck   the head committed (or walked over meanwhile): disarm and    *)
(*             complete at once; cancelled meanwhile: complete              *)
(*             (WdfRequestMarkCancelableEx fails); else pend, cancelable.   *)
(* Cancel (CancelIoEx, close, exit) marks the request cancelled; if it is   *)
(* cancelable at that moment the framework takes it and the cancel routine *)
(* disarms and completes it.                                                *)
(*                                                                          *)
(* Records take one abstract unit; header memory is per slot, so a slot's  *)
(* header is whatever was last written there.                              *)
(*                                                                          *)
(* `Bug` selects one deliberate mistake (see Bugs); "none" is the design.   *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS
    Producers,   \* set of producer ids (model values)
    Capacity,    \* slots in the ring
    MaxOffset,   \* bound on the number of records ever reserved
    Batch,       \* records per batched write (Ring::write_batch); 0: no batches
    Bug          \* which deliberate mistake the model makes, or "none"

Bugs == {
    "none",
    \* producers check free space against the consumer page, not the validated offset
    "trust_user_consumer_offset",
    \* the waker completes the request whatever UnmarkCancelable says
    "cancel_double_complete",
    \* the producer loads `armed` before its commit store
    "lost_wakeup_check_before_commit",
    \* the handler checks the head, then arms and pends without a re-check
    "lost_wakeup_arm_without_recheck",
    \* the re-check after arming looks only at the head's slot, not at whether the
    \* validated offset has passed the head (whose slot may then hold a newer record)
    "lost_wakeup_recheck_reused_slot",
    \* the query completes on producer > head, not on a committed head
    "complete_on_producer_ahead",
    \* the waker completes whatever request is pending, without
    \* disarm_query_for(its record) (device.rs `wake_query` without the check)
    "wake_without_disarm",
    \* the waker disarms and completes without taking the query lock
    "wake_without_lock",
    \* a batched write checks `armed` against its last record only
    "batch_wake_checks_last"
}

ASSUME Capacity \in Nat \ {0}
ASSUME MaxOffset \in Nat \ {0}
ASSUME Batch \in 0 .. Capacity
ASSUME Bug \in Bugs
ASSUME Producers # {}

Slots     == 0 .. (Capacity - 1)
Offsets   == 0 .. MaxOffset
Slot(o)   == o % Capacity
Committed == {"Submitted", "Discarded"}

HeaderValues == {"Zero", "Locked", "Submitted", "Discarded"}

\* Producer program counter.
\*   idle -> reserved -> locked -> published -> committed -> (waking ->) idle
\* With Bug = "lost_wakeup_check_before_commit":
\*   ... published -> loaded -> (waking ->) idle
\* A batched write (Batch > 0):
\*   idle -> batchReserved -> batchWritten -> batchPublished -> (waking ->) idle
PcValues == {"idle", "reserved", "locked", "published", "loaded", "committed", "waking",
             "batchReserved", "batchWritten", "batchPublished"}

\* State of the latest QUERY request: none yet; the handler runs, holding
\* the query lock ("armed", or "checked" with Bug =
\* "lost_wakeup_arm_without_recheck"); pending; or completed.
QValues == {"none", "armed", "checked", "pending", "done"}

VARIABLES
    reserveOffset,   \* kernel page: reserve_offset
    producerOffset,  \* producer page: producer_offset
    userConsumer,    \* consumer page: consumer_offset (hostile)
    validated,       \* kernel page: validated_consumer_offset
    hdr,             \* hdr[s]: the header in slot s
    pc,              \* pc[p]: where producer p is
    mine,            \* mine[p]: the offset of p's record; 0 when idle
    saw,             \* saw[p]: Bug = "lost_wakeup_check_before_commit": what p's early load said
    armed,           \* kernel page: armed = head + 1 while a query waits for head, or 0
    q,               \* the latest QUERY request's state
    qhead,           \* the head that request waits for (0 when none is outstanding)
    cancelReq,       \* the request has been cancelled
    cancelable,      \* the request is marked cancelable
    cancelOwned,     \* the framework gave the request to the cancel routine
    completions,     \* how many times the request was completed
    wokeOnLocked     \* ghost: a request was completed (not cancelled) on an uncommitted head

vars == <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine,
          saw, armed, q, qhead, cancelReq, cancelable, cancelOwned, completions,
          wokeOnLocked>>

queryVars == <<armed, q, qhead, cancelReq, cancelable, cancelOwned, completions,
               wokeOnLocked>>

Min(a, b) == IF a < b THEN a ELSE b
Max(a, b) == IF a > b THEN a ELSE b

\* A producer owns its slot from Reserve until its commit.
Holding(p) == pc[p] \in {"reserved", "locked", "published", "loaded"}

\* A batched writer owns its `Batch` slots from ReserveBatch until its publish.
BatchHolding(p) == pc[p] \in {"batchReserved", "batchWritten"}

\* The records of p's batch.
BatchRecords(p) == mine[p] .. (mine[p] + Batch - 1)

\* The slots p owns now.
OwnedSlots(p) ==
    IF BatchHolding(p) THEN {Slot(o) : o \in BatchRecords(p)}
    ELSE IF Holding(p) THEN {Slot(mine[p])}
    ELSE {}

\* What the code can see of record o: published, and its slot's header not
\* LOCKED (Ring::is_committed).
LooksCommitted(o) == o < producerOffset /\ hdr[Slot(o)] # "Locked"

\* The truth (for the properties): record o has been committed.  Below the
\* validated offset every record has been; at or above it, a published
\* record's slot holds that record's header (no reuse beyond
\* validated + Capacity).
RecordCommitted(o) ==
    \/ o < validated
    \/ o < producerOffset /\ hdr[Slot(o)] \in Committed

\* Where a walk from `validated` toward min(hint, producer offset) ends: at
\* the first record that does not look committed, or at that limit.
WalkEnd(hint) ==
    LET limit == Min(hint, producerOffset) IN
    IF validated >= limit THEN validated
    ELSE CHOOSE e \in validated .. limit :
            /\ \A o \in validated .. (e - 1) : LooksCommitted(o)
            /\ (e = limit \/ ~LooksCommitted(e))

\* The handler's test of its head h before pending.
HeadReady(h) ==
    CASE Bug = "complete_on_producer_ahead"      -> producerOffset > h
      [] Bug = "lost_wakeup_recheck_reused_slot" -> LooksCommitted(h)
      [] OTHER                                   -> LooksCommitted(h) \/ validated > h

\* The handler holds the query lock.
HandlerHoldsLock == q \in {"armed", "checked"}

Outstanding == q \in {"armed", "checked", "pending"}

-----------------------------------------------------------------------------
Init ==
    /\ reserveOffset  = 0
    /\ producerOffset = 0
    /\ userConsumer   = 0
    /\ validated      = 0
    /\ hdr            = [s \in Slots |-> "Zero"]
    /\ pc             = [p \in Producers |-> "idle"]
    /\ mine           = [p \in Producers |-> 0]
    /\ saw            = [p \in Producers |-> FALSE]
    /\ armed          = 0
    /\ q              = "none"
    /\ qhead          = 0
    /\ cancelReq      = FALSE
    /\ cancelable     = FALSE
    /\ cancelOwned    = FALSE
    /\ completions    = 0
    /\ wokeOnLocked   = FALSE

\* Free space is checked against the validated consumer offset; the bug
\* trusts whatever the consumer wrote.
SpaceBase == IF Bug = "trust_user_consumer_offset" THEN userConsumer ELSE validated

\* ---- producers ----

Reserve(p) ==
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + 1 <= SpaceBase + Capacity
    /\ reserveOffset' = reserveOffset + 1
    /\ mine' = [mine EXCEPT ![p] = reserveOffset]
    /\ pc'   = [pc EXCEPT ![p] = "reserved"]
    /\ UNCHANGED <<producerOffset, userConsumer, validated, hdr, saw>>
    /\ UNCHANGED queryVars

\* The ring looks full to a producer: it walks the validated consumer offset
\* toward the consumer page (then reserves, or fails and counts a drop).
Walk(p) ==
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + Max(1, Batch) > validated + Capacity
    /\ WalkEnd(userConsumer) > validated
    /\ validated' = WalkEnd(userConsumer)
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, hdr, pc, mine, saw>>
    /\ UNCHANGED queryVars

Lock(p) ==
    /\ pc[p] = "reserved"
    /\ hdr' = [hdr EXCEPT ![Slot(mine[p])] = "Locked"]
    /\ pc'  = [pc EXCEPT ![p] = "locked"]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, mine, saw>>
    /\ UNCHANGED queryVars

Publish(p) ==
    /\ pc[p] = "locked"
    /\ producerOffset = mine[p]
    /\ producerOffset' = mine[p] + 1
    /\ pc' = [pc EXCEPT ![p] = "published"]
    /\ UNCHANGED <<reserveOffset, userConsumer, validated, hdr, mine, saw>>
    /\ UNCHANGED queryVars

\* The one load of `armed` after a commit: does a query wait for my record?
ArmedForMe(p) == armed = mine[p] + 1

\* Bug "lost_wakeup_check_before_commit": the load of `armed` comes first.
LoadArmedEarly(p) ==
    /\ Bug = "lost_wakeup_check_before_commit"
    /\ pc[p] = "published"
    /\ saw' = [saw EXCEPT ![p] = ArmedForMe(p)]
    /\ pc'  = [pc EXCEPT ![p] = "loaded"]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, mine>>
    /\ UNCHANGED queryVars

\* Submit or discard: one release store of the header (v), then the check of
\* `armed` (or, with the bug, after the early load: wake if it matched).
CanCommit(p) ==
    \/ Bug # "lost_wakeup_check_before_commit" /\ pc[p] = "published"
    \/ Bug = "lost_wakeup_check_before_commit" /\ pc[p] = "loaded"

CommitAs(p, v) ==
    /\ hdr' = [hdr EXCEPT ![Slot(mine[p])] = v]
    /\ IF Bug = "lost_wakeup_check_before_commit"
         THEN /\ pc'   = [pc EXCEPT ![p] = IF saw[p] THEN "waking" ELSE "idle"]
              /\ mine' = [mine EXCEPT ![p] = IF saw[p] THEN @ ELSE 0]
              /\ saw'  = [saw EXCEPT ![p] = FALSE]
         ELSE /\ pc'   = [pc EXCEPT ![p] = "committed"]
              /\ UNCHANGED <<mine, saw>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated>>
    /\ UNCHANGED queryVars

Submit(p) ==
    /\ CanCommit(p)
    /\ CommitAs(p, "Submitted")

Discard(p) ==
    /\ CanCommit(p)
    /\ CommitAs(p, "Discarded")

CheckArmed(p) ==
    /\ pc[p] = "committed"
    /\ pc'   = [pc EXCEPT ![p] = IF ArmedForMe(p) THEN "waking" ELSE "idle"]
    /\ mine' = [mine EXCEPT ![p] = IF ArmedForMe(p) THEN @ ELSE 0]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, saw>>
    /\ UNCHANGED queryVars

\* ---- batched writes (Ring::write_batch) ----

\* One compare-and-swap claims `Batch` records, against the validated offset.
ReserveBatch(p) ==
    /\ Batch > 0
    /\ pc[p] = "idle"
    /\ reserveOffset + Batch <= MaxOffset
    /\ reserveOffset + Batch <= SpaceBase + Capacity
    /\ reserveOffset' = reserveOffset + Batch
    /\ mine' = [mine EXCEPT ![p] = reserveOffset]
    /\ pc'   = [pc EXCEPT ![p] = "batchReserved"]
    /\ UNCHANGED <<producerOffset, userConsumer, validated, hdr, saw>>
    /\ UNCHANGED queryVars

\* The payloads are copied and every header written as submitted, with no
\* LOCKED phase: nobody reads a header at or above the producer offset (the
\* walk, the consumer and Ring::is_committed stop there), so the header
\* stores are relaxed in the code and one step here.
WriteBatch(p) ==
    /\ pc[p] = "batchReserved"
    /\ hdr' = [s \in Slots |-> IF s \in OwnedSlots(p) THEN "Submitted" ELSE hdr[s]]
    /\ pc'  = [pc EXCEPT ![p] = "batchWritten"]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, mine, saw>>
    /\ UNCHANGED queryVars

\* One publish commits the whole batch: wait for every earlier claim, then
\* the release store of the producer offset (the store of the store-load
\* pair with `arm_query`).
PublishBatch(p) ==
    /\ pc[p] = "batchWritten"
    /\ producerOffset = mine[p]
    /\ producerOffset' = mine[p] + Batch
    /\ pc' = [pc EXCEPT ![p] = "batchPublished"]
    /\ UNCHANGED <<reserveOffset, userConsumer, validated, hdr, mine, saw>>
    /\ UNCHANGED queryVars

\* The one load of `armed` after the publish (SeqCst fence between): does a
\* query wait for one of my records?  Then wake it, for that head.  Bug
\* "batch_wake_checks_last": only the last record is looked at.
CheckArmedBatch(p) ==
    /\ pc[p] = "batchPublished"
    /\ LET wake == IF Bug = "batch_wake_checks_last"
                      THEN armed = mine[p] + Batch
                      ELSE armed - 1 \in BatchRecords(p) /\ armed > 0
       IN /\ pc'   = [pc EXCEPT ![p] = IF wake THEN "waking" ELSE "idle"]
          /\ mine' = [mine EXCEPT ![p] = IF wake THEN armed - 1 ELSE 0]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, saw>>
    /\ UNCHANGED queryVars

\* Complete the request (not as a cancel): disarm, count, and note whether
\* the head it waits for was committed.  `base`: completions so far.
CompleteOn(h, base) ==
    /\ completions'  = base + 1
    /\ q'            = "done"
    /\ qhead'        = 0
    /\ armed'        = 0
    /\ wokeOnLocked' = (wokeOnLocked \/ ~RecordCommitted(h))

\* The host's wake-up, under the query lock.  If the query is still armed
\* for my record, disarm it (Ring::disarm_query_for), then complete the
\* request only if WdfRequestUnmarkCancelable succeeds; otherwise the
\* cancel routine owns it.  The code unmarks in the same locked step
\* (Platform::take_query) and completes after releasing the lock, which
\* no other party can tell apart: an unmarked request is the waker's.  Bug "cancel_double_complete": complete it
\* whatever UnmarkCancelable says.  Bug "wake_without_disarm": complete
\* whatever request is pending, armed for my record or not.  The request is
\* judged on its own head (qhead), not on the waker's record.  Bug
\* "wake_without_lock": wake while the handler holds the lock (between its
\* arm and its pend).
Wake(p) ==
    /\ pc[p] = "waking"
    /\ (~HandlerHoldsLock \/ Bug = "wake_without_lock")
    /\ pc'   = [pc EXCEPT ![p] = "idle"]
    /\ mine' = [mine EXCEPT ![p] = 0]
    /\ IF ArmedForMe(p) \/ (Bug = "wake_without_disarm" /\ q = "pending")
         THEN IF cancelable \/ Bug = "cancel_double_complete"
                THEN /\ CompleteOn(qhead, completions)
                     /\ cancelable' = FALSE
                     /\ UNCHANGED <<cancelReq, cancelOwned>>
                ELSE /\ armed' = 0
                     /\ UNCHANGED <<q, qhead, cancelReq, cancelable, cancelOwned,
                                    completions, wokeOnLocked>>
         ELSE UNCHANGED queryVars
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, saw>>

\* ---- the hostile consumer ----

UserWrite(v) ==
    /\ v # userConsumer
    /\ userConsumer' = v
    /\ UNCHANGED <<reserveOffset, producerOffset, validated, hdr, pc, mine, saw>>
    /\ UNCHANGED queryVars

\* ---- QUERY ----

\* A new request may start once the previous one is completed.  It carries
\* a consumer offset, which is anything the consumer likes: the model uses
\* the consumer page.
NewRequest ==
    /\ q \in {"none", "done"}
    /\ ~cancelOwned
    /\ cancelReq'  = FALSE
    /\ cancelable' = FALSE

\* The design: return space (walk), arm with the new head (Ring::arm_query
\* stores `armed`), and re-check in the next step.
QueryStart ==
    /\ Bug # "lost_wakeup_arm_without_recheck"
    /\ NewRequest
    /\ validated'   = WalkEnd(userConsumer)
    /\ qhead'       = WalkEnd(userConsumer)
    /\ armed'       = WalkEnd(userConsumer) + 1
    /\ q'           = "armed"
    /\ completions' = 0
    /\ UNCHANGED <<cancelOwned, wokeOnLocked>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, hdr, pc, mine, saw>>

\* Pend with `armed` = a, unless the request was cancelled meanwhile: then
\* WdfRequestMarkCancelableEx fails and the handler disarms and completes it.
PendOrCancelled(a) ==
    IF cancelReq
      THEN /\ completions' = completions + 1
           /\ q'           = "done"
           /\ qhead'       = 0
           /\ armed'       = 0
           /\ UNCHANGED <<cancelable, wokeOnLocked>>
      ELSE /\ q'          = "pending"
           /\ cancelable' = TRUE
           /\ armed'      = a
           /\ UNCHANGED <<qhead, completions, wokeOnLocked>>

\* Ring::arm_query's re-check, then complete or pend.  As device.rs does,
\* the handler completes the request itself only if the re-check says the
\* head is ready *and* disarm_query_for(head) succeeds (the armed word still
\* holds head + 1); otherwise it pends, with whatever `armed` holds.
QueryRecheck ==
    /\ q = "armed"
    /\ IF HeadReady(qhead) /\ armed = qhead + 1
         THEN CompleteOn(qhead, completions) /\ UNCHANGED cancelable
         ELSE PendOrCancelled(armed)
    /\ UNCHANGED <<cancelReq, cancelOwned>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

\* Bug "lost_wakeup_arm_without_recheck": walk and check the head; if it is
\* not ready, arm and pend in the next step without looking again.
QueryStartCheck ==
    /\ Bug = "lost_wakeup_arm_without_recheck"
    /\ NewRequest
    /\ validated' = WalkEnd(userConsumer)
    /\ IF HeadReady(WalkEnd(userConsumer))
         THEN CompleteOn(WalkEnd(userConsumer), 0)
         ELSE /\ q'           = "checked"
              /\ qhead'       = WalkEnd(userConsumer)
              /\ completions' = 0
              /\ UNCHANGED <<armed, wokeOnLocked>>
    /\ UNCHANGED <<cancelOwned>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, hdr, pc, mine, saw>>

QueryArmPend ==
    /\ q = "checked"
    /\ PendOrCancelled(qhead + 1)
    /\ UNCHANGED <<cancelReq, cancelOwned>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

\* Cancel arrives.  If the request is cancelable, the framework makes it
\* not cancelable and hands it to the cancel routine, atomically with
\* respect to WdfRequestUnmarkCancelable.
Cancel ==
    /\ Outstanding
    /\ ~cancelReq
    /\ cancelReq'   = TRUE
    /\ cancelable'  = FALSE
    /\ cancelOwned' = cancelable
    /\ UNCHANGED <<armed, q, qhead, completions, wokeOnLocked>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

\* The cancel routine: take the query lock, disarm (Ring::disarm_query),
\* complete with STATUS_CANCELLED.  It owns the request, so it completes it
\* unconditionally.
CancelRoutine ==
    /\ cancelOwned
    /\ ~HandlerHoldsLock
    /\ cancelOwned' = FALSE
    /\ completions' = completions + 1
    /\ q'           = "done"
    /\ qhead'       = 0
    /\ armed'       = 0
    /\ UNCHANGED <<cancelReq, cancelable, wokeOnLocked>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

-----------------------------------------------------------------------------
ProducerStep(p) ==
    \/ Lock(p)
    \/ Publish(p)
    \/ LoadArmedEarly(p)
    \/ Submit(p)
    \/ Discard(p)
    \/ CheckArmed(p)
    \/ WriteBatch(p)
    \/ PublishBatch(p)
    \/ CheckArmedBatch(p)
    \/ Wake(p)

HandlerStep == QueryRecheck \/ QueryArmPend

\* Each action on its own line, so counterexamples and statistics name it.
Next ==
    \/ \E p \in Producers : Reserve(p)
    \/ \E p \in Producers : Walk(p)
    \/ \E p \in Producers : Lock(p)
    \/ \E p \in Producers : Publish(p)
    \/ \E p \in Producers : LoadArmedEarly(p)
    \/ \E p \in Producers : Submit(p)
    \/ \E p \in Producers : Discard(p)
    \/ \E p \in Producers : CheckArmed(p)
    \/ \E p \in Producers : ReserveBatch(p)
    \/ \E p \in Producers : WriteBatch(p)
    \/ \E p \in Producers : PublishBatch(p)
    \/ \E p \in Producers : CheckArmedBatch(p)
    \/ \E p \in Producers : Wake(p)
    \/ \E v \in Offsets : UserWrite(v)
    \/ QueryStart
    \/ QueryStartCheck
    \/ QueryRecheck
    \/ QueryArmPend
    \/ Cancel
    \/ CancelRoutine

\* Producers that have reserved finish their record and their wake-up; the
\* handler finishes the request it started; the cancel routine runs.
\* Nobody is forced to reserve, walk, write the consumer offset, issue a
\* query or cancel one.
Fairness ==
    /\ \A p \in Producers : WF_vars(ProducerStep(p))
    /\ WF_vars(HandlerStep)
    /\ WF_vars(CancelRoutine)

Spec == Init /\ [][Next]_vars /\ Fairness

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ reserveOffset  \in 0 .. MaxOffset
    /\ producerOffset \in 0 .. MaxOffset
    /\ userConsumer   \in Offsets
    /\ validated      \in 0 .. MaxOffset
    /\ hdr            \in [Slots -> HeaderValues]
    /\ pc             \in [Producers -> PcValues]
    /\ mine           \in [Producers -> 0 .. MaxOffset]
    /\ saw            \in [Producers -> BOOLEAN]
    /\ armed          \in 0 .. (MaxOffset + 1)
    /\ q              \in QValues
    /\ qhead          \in 0 .. MaxOffset
    /\ cancelReq      \in BOOLEAN
    /\ cancelable     \in BOOLEAN
    /\ cancelOwned    \in BOOLEAN
    /\ completions    \in 0 .. 2
    /\ wokeOnLocked   \in BOOLEAN

\* validated <= producer <= reserve, whatever the consumer writes;
\* producers' records lie below the reserve offset, and below the producer
\* offset once published.
OffsetsConsistent ==
    /\ validated <= producerOffset
    /\ producerOffset <= reserveOffset
    /\ \A p \in Producers : Holding(p) => mine[p] < reserveOffset
    /\ \A p \in Producers : pc[p] \in {"published", "loaded"} => mine[p] < producerOffset
    /\ \A p \in Producers : BatchHolding(p) =>
           mine[p] + Batch <= reserveOffset /\ producerOffset <= mine[p]
    /\ \A p \in Producers : pc[p] = "batchPublished" => mine[p] + Batch <= producerOffset

\* Producers never reserve beyond the space the kernel has validated, so no
\* unreturned record is overwritten (a lemma of NoOverwriteLocked; the
\* trust_user_consumer_offset cfg leaves it out, its point is the latter).
ReserveWithinValidated == reserveOffset <= validated + Capacity

\* No producer ever reserves over a record that is still LOCKED: two
\* records that are being written (one at a time or in a batch) never share
\* a slot.
NoOverwriteLocked ==
    \A p1, p2 \in Producers :
        p1 # p2 => OwnedSlots(p1) \cap OwnedSlots(p2) = {}

\* Cancel against completion: exactly one of them completes the request.
\* At most once is this invariant; at least once is CancelledQueryCompletes
\* (and every way out of "pending" completes it).
QueryCompletedAtMostOnce == completions <= 1

QueryStatesConsistent ==
    /\ Outstanding => completions = 0
    /\ q = "done" => completions >= 1
    /\ ~Outstanding => qhead = 0
    /\ cancelable => q = "pending"
    /\ (q = "pending" /\ ~cancelable) => cancelOwned
    /\ armed # 0 => (q \in {"armed", "pending"} /\ armed = qhead + 1)

\* A request is completed (other than by cancel) only when the head record
\* it waits for is committed, not merely because producer > head.
QueryCompletesOnCommittedHead == ~wokeOnLocked

-----------------------------------------------------------------------------
(* Temporal properties (checked with Spec's fairness) *)

\* No lost wake-up: a pending query whose head record is committed is
\* eventually completed.  The head is the validated consumer offset when the
\* request armed; the validated offset moves past it only over committed
\* records, so "committed" here is RecordCommitted(qhead).
NoLostWakeup ==
    (q = "pending" /\ RecordCommitted(qhead)) ~> (q # "pending")

\* A cancelled request is completed (by the handler, a waker or the cancel
\* routine).
CancelledQueryCompletes ==
    (Outstanding /\ cancelReq) ~> (q = "done")

=============================================================================
