----------------------------- MODULE RingBufferMP -----------------------------
(***************************************************************************)
(* The ring beyond the seed's limits: several producers, a hostile         *)
(* consumer, the kernel's validated consumer offset, and the async query   *)
(* with its arm / check handshake and its cancel / complete race.          *)
(*                                                                          *)
(* Producers (lock-free, as in the design's section 3):                     *)
(*   Reserve   CAS the reserve offset forward, checking space against the   *)
(*             validated consumer offset (never the user's value);          *)
(*   Lock      write the header with LOCKED set;                            *)
(*   Publish   wait until producer offset = my start, then store my end,    *)
(*             so offsets are published in reservation order;               *)
(*   Commit    submit or discard: one store of the header (any order       *)
(*             between producers);                                          *)
(*   Check     one load of `armed`; only if it says a query waits for a     *)
(*             record at or before mine, go and Wake;                       *)
(*   Wake      under the query lock: if a query is pending and its head     *)
(*             record is committed, take it from the cancel machinery       *)
(*             (WdfRequestUnmarkCancelable) and complete it.                *)
(*   Walk      when the ring looks full: advance the validated consumer     *)
(*             offset over one committed header, then Check / Wake as after *)
(*             a commit (the new head may be what a query waits for).       *)
(*                                                                          *)
(* The consumer's page is writable by the consumer process: `userConsumer`  *)
(* takes any value at any time.  The kernel keeps `validated`, which only   *)
(* moves by walking committed headers toward min(userConsumer, producer).  *)
(*                                                                          *)
(* QUERY (one request at a time, any number of them one after another),    *)
(* run by the handler, holding the query lock from start to pend:          *)
(*   Start+Arm walk `validated` forward, then armed := head + 1;            *)
(*   Recheck   head committed -> complete at once; cancelled -> complete    *)
(*             (WdfRequestMarkCancelableEx fails); else pend, cancelable.   *)
(* Cancel (CancelIoEx, close, exit) marks the request cancelled; if it is   *)
(* cancelable at that moment the framework takes it and the cancel routine *)
(* completes it.                                                            *)
(*                                                                          *)
(* Records take one abstract unit; header memory is per slot, so a slot's  *)
(* header is whatever was last written there.                               *)
(*                                                                          *)
(* `Bug` selects one deliberate mistake (see Bugs); "none" is the design.   *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS
    Producers,   \* set of producer ids (model values)
    Capacity,    \* slots in the ring
    MaxOffset,   \* bound on the number of records ever reserved
    Bug          \* which deliberate mistake the model makes, or "none"

Bugs == {
    "none",
    \* producers check free space against the user's consumer offset
    "trust_user_consumer_offset",
    \* the waker completes the request whatever UnmarkCancelable says
    "cancel_double_complete",
    \* the producer loads `armed` before its commit store
    "lost_wakeup_check_before_commit",
    \* the handler checks the head, then arms and pends without a re-check
    "lost_wakeup_arm_without_recheck",
    \* the query completes on producer > consumer, not on a committed head
    "complete_on_producer_ahead"
}

ASSUME Capacity \in Nat \ {0}
ASSUME MaxOffset \in Nat \ {0}
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
\* A walk: idle -> committed -> (waking ->) idle
PcValues == {"idle", "reserved", "locked", "published", "loaded", "committed", "waking"}

\* A producer owns its slot from Reserve until its commit.
Holding(p) == pc[p] \in {"reserved", "locked", "published", "loaded"}

\* State of the latest QUERY request: none yet; the handler runs, holding
\* the query lock ("armed", or "checked" with Bug =
\* "lost_wakeup_arm_without_recheck"); pending; or completed.
QValues  == {"none", "armed", "checked", "pending", "done"}

VARIABLES
    reserveOffset,   \* kernel page: reserve_offset
    producerOffset,  \* producer page: producer_offset
    userConsumer,    \* consumer page: consumer_offset (hostile)
    validated,       \* kernel page: validated_consumer_offset
    hdr,             \* hdr[s]: the header in slot s
    pc,              \* pc[p]: where producer p is
    mine,            \* mine[p]: p's record offset (or the offset it walked over); 0 when idle
    saw,             \* saw[p]: Bug = "lost_wakeup_check_before_commit": what p's early load said
    armed,           \* kernel page: armed = awaited head offset + 1, or 0
    q,               \* the QUERY request's state
    cancelReq,       \* the request has been cancelled
    cancelable,      \* the request is marked cancelable
    cancelOwned,     \* the framework gave the request to the cancel routine
    completions,     \* how many times the current request was completed
    wokeOnLocked     \* ghost: a request was completed (not cancelled) on an uncommitted head

vars == <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine,
          saw, armed, q, cancelReq, cancelable, cancelOwned, completions,
          wokeOnLocked>>

producerVars == <<reserveOffset, producerOffset, hdr, pc, mine, saw>>
queryVars    == <<armed, q, cancelReq, cancelable, cancelOwned, completions,
                  wokeOnLocked>>

Min(a, b) == IF a < b THEN a ELSE b

\* Record o is published and its header is committed.
IsCommitted(o) == o < producerOffset /\ hdr[Slot(o)] \in Committed

HeadCommittedAt(v) == IsCommitted(v)
HeadCommitted      == HeadCommittedAt(validated)

\* When the query may complete.
CompleteCondAt(v) ==
    IF Bug = "complete_on_producer_ahead" THEN producerOffset > v ELSE HeadCommittedAt(v)

\* Where a walk from `validated` ends: the first offset that is not a
\* committed record, or min(user value, producer offset).
WalkLimit == Min(userConsumer, producerOffset)
WalkEnd ==
    IF validated >= WalkLimit THEN validated
    ELSE CHOOSE e \in validated .. WalkLimit :
            /\ \A o \in validated .. (e - 1) : IsCommitted(o)
            /\ (e = WalkLimit \/ ~IsCommitted(e))

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
    /\ mine'  = [mine EXCEPT ![p] = reserveOffset]
    /\ pc'    = [pc EXCEPT ![p] = "reserved"]
    /\ UNCHANGED <<producerOffset, userConsumer, validated, hdr, saw>>
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

\* The notification check after a commit or a walk: one load of `armed`.
WantsWake(p) == armed # 0 /\ mine[p] + 1 >= armed

\* Bug "lost_wakeup_check_before_commit": the load of `armed` comes first.
LoadArmedEarly(p) ==
    /\ Bug = "lost_wakeup_check_before_commit"
    /\ pc[p] = "published"
    /\ saw' = [saw EXCEPT ![p] = WantsWake(p)]
    /\ pc'  = [pc EXCEPT ![p] = "loaded"]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, mine>>
    /\ UNCHANGED queryVars

\* Submit (v = "Submitted") or discard (v = "Discarded"): one release store.
Commit(p, v) ==
    /\ \/ Bug # "lost_wakeup_check_before_commit" /\ pc[p] = "published"
       \/ Bug = "lost_wakeup_check_before_commit" /\ pc[p] = "loaded"
    /\ hdr' = [hdr EXCEPT ![Slot(mine[p])] = v]
    /\ IF Bug = "lost_wakeup_check_before_commit"
         THEN /\ pc'   = [pc EXCEPT ![p] = IF saw[p] THEN "waking" ELSE "idle"]
              /\ mine' = [mine EXCEPT ![p] = IF saw[p] THEN @ ELSE 0]
              /\ saw'  = [saw EXCEPT ![p] = FALSE]
         ELSE /\ pc'   = [pc EXCEPT ![p] = "committed"]
              /\ UNCHANGED <<mine, saw>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated>>
    /\ UNCHANGED queryVars

CheckArmed(p) ==
    /\ pc[p] = "committed"
    /\ pc'   = [pc EXCEPT ![p] = IF WantsWake(p) THEN "waking" ELSE "idle"]
    /\ mine' = [mine EXCEPT ![p] = IF WantsWake(p) THEN @ ELSE 0]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, saw>>
    /\ UNCHANGED queryVars

\* Complete the request (not a cancel) on the head at v: count the
\* completion (`base` completions so far) and note whether the head was
\* committed.
CompleteAt(v, base) ==
    /\ completions'  = base + 1
    /\ q'            = "done"
    /\ armed'        = 0
    /\ wokeOnLocked' = (wokeOnLocked \/ ~HeadCommittedAt(v))

\* Under the query lock.  The design: complete only if UnmarkCancelable
\* succeeds (the request is still cancelable); otherwise the cancel routine
\* owns it.  Bug "cancel_double_complete": complete whatever UnmarkCancelable says.
Wake(p) ==
    /\ pc[p] = "waking"
    /\ ~HandlerHoldsLock
    /\ pc' = [pc EXCEPT ![p] = "idle"]
    /\ IF q = "pending" /\ CompleteCondAt(validated)
                        /\ (cancelable \/ Bug = "cancel_double_complete")
         THEN /\ CompleteAt(validated, completions)
              /\ cancelable' = FALSE
              /\ UNCHANGED <<cancelReq, cancelOwned>>
         ELSE UNCHANGED queryVars
    /\ mine' = [mine EXCEPT ![p] = 0]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, saw>>

\* A producer that finds the ring full walks the validated consumer offset
\* over one committed header, then checks `armed` as after a commit.
Walk(p) ==
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + 1 > validated + Capacity
    /\ validated < WalkLimit
    /\ IsCommitted(validated)
    /\ validated' = validated + 1
    /\ mine' = [mine EXCEPT ![p] = validated]
    /\ pc'   = [pc EXCEPT ![p] = "committed"]
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, hdr, saw>>
    /\ UNCHANGED queryVars

\* ---- the hostile consumer ----

UserWrite(v) ==
    /\ v # userConsumer
    /\ userConsumer' = v
    /\ UNCHANGED <<reserveOffset, producerOffset, validated, hdr, pc, mine, saw>>
    /\ UNCHANGED queryVars

\* ---- QUERY ----

NewRequest ==
    /\ q \in {"none", "done"}
    /\ ~cancelOwned
    /\ cancelReq'   = FALSE
    /\ cancelable'  = FALSE

\* The design: return space (walk), arm with the head, then re-check.
QueryStartArm ==
    /\ Bug # "lost_wakeup_arm_without_recheck"
    /\ NewRequest
    /\ validated'   = WalkEnd
    /\ armed'       = WalkEnd + 1
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
           /\ armed'       = 0
           /\ UNCHANGED <<cancelable, wokeOnLocked>>
      ELSE /\ q'          = "pending"
           /\ cancelable' = TRUE
           /\ armed'      = a
           /\ UNCHANGED <<completions, wokeOnLocked>>

QueryRecheck ==
    /\ q = "armed"
    /\ IF CompleteCondAt(validated)
         THEN CompleteAt(validated, completions) /\ UNCHANGED cancelable
         ELSE PendOrCancelled(armed)
    /\ UNCHANGED <<cancelReq, cancelOwned>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

\* Bug "lost_wakeup_arm_without_recheck": walk and check the head; if it is not
\* committed, arm and pend without looking again.
QueryStartCheck ==
    /\ Bug = "lost_wakeup_arm_without_recheck"
    /\ NewRequest
    /\ validated' = WalkEnd
    /\ IF CompleteCondAt(WalkEnd)
         THEN CompleteAt(WalkEnd, 0)
         ELSE /\ q'           = "checked"
              /\ completions' = 0
              /\ UNCHANGED <<armed, wokeOnLocked>>
    /\ UNCHANGED <<cancelOwned>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, hdr, pc, mine, saw>>

QueryArmPend ==
    /\ q = "checked"
    /\ PendOrCancelled(validated + 1)
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
    /\ UNCHANGED <<armed, q, completions, wokeOnLocked>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

\* The cancel routine: take the query lock, disarm, complete with
\* STATUS_CANCELLED.  It owns the request, so it completes unconditionally.
CancelRoutine ==
    /\ cancelOwned
    /\ ~HandlerHoldsLock
    /\ cancelOwned' = FALSE
    /\ completions' = completions + 1
    /\ q'           = "done"
    /\ armed'       = 0
    /\ UNCHANGED <<cancelReq, cancelable, wokeOnLocked>>
    /\ UNCHANGED <<reserveOffset, producerOffset, userConsumer, validated, hdr, pc, mine, saw>>

-----------------------------------------------------------------------------
ProducerStep(p) ==
    \/ Lock(p)
    \/ Publish(p)
    \/ LoadArmedEarly(p)
    \/ Commit(p, "Submitted")
    \/ Commit(p, "Discarded")
    \/ CheckArmed(p)
    \/ Wake(p)

HandlerStep == QueryRecheck \/ QueryArmPend

\* Each action on its own line, so counterexamples name it.
Next ==
    \/ \E p \in Producers : Reserve(p)
    \/ \E p \in Producers : Lock(p)
    \/ \E p \in Producers : Publish(p)
    \/ \E p \in Producers : LoadArmedEarly(p)
    \/ \E p \in Producers : Commit(p, "Submitted")
    \/ \E p \in Producers : Commit(p, "Discarded")
    \/ \E p \in Producers : CheckArmed(p)
    \/ \E p \in Producers : Wake(p)
    \/ \E p \in Producers : Walk(p)
    \/ \E v \in Offsets : UserWrite(v)
    \/ QueryStartArm
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
    /\ cancelReq      \in BOOLEAN
    /\ cancelable     \in BOOLEAN
    /\ cancelOwned    \in BOOLEAN
    /\ completions    \in 0 .. 2
    /\ wokeOnLocked   \in BOOLEAN

\* validated <= producer <= reserve, whatever the consumer writes, and
\* producers hold distinct records below the reserve offset.
OffsetsConsistent ==
    /\ validated <= producerOffset
    /\ producerOffset <= reserveOffset
    /\ \A p \in Producers : Holding(p) => mine[p] < reserveOffset
    /\ \A p \in Producers : Holding(p) /\ pc[p] # "reserved" /\ pc[p] # "locked"
                               => mine[p] < producerOffset

\* Producers never reserve beyond the space the kernel has validated, so
\* no unreturned record is overwritten (a lemma of NoOverwriteLocked; not
\* listed in the trust_user_consumer_offset cfg, whose point is the latter).
ReserveWithinValidated == reserveOffset <= validated + Capacity

\* No producer ever reserves over a record that is still LOCKED: two
\* records that are being written never share a slot.
NoOverwriteLocked ==
    \A p1, p2 \in Producers :
        (p1 # p2 /\ Holding(p1) /\ Holding(p2)) => Slot(mine[p1]) # Slot(mine[p2])

\* Cancel against completion: exactly one of them completes the request.
\* At most once is this invariant; at least once is CancelledQueryCompletes
\* (and every way out of "pending" completes it).
QueryCompletedAtMostOnce == completions <= 1

QueryStatesConsistent ==
    /\ Outstanding => completions = 0
    /\ q = "done" => completions >= 1
    /\ cancelable => q = "pending"
    /\ (q = "pending" /\ ~cancelable) => cancelOwned
    /\ armed # 0 => q \in {"armed", "pending"}

\* A request is completed (other than by cancel) only on a committed head
\* record, not merely because producer > consumer.
QueryCompletesOnCommittedHead == ~wokeOnLocked

-----------------------------------------------------------------------------
(* Temporal properties (checked with Spec's fairness) *)

QueryPending == q = "pending"

\* No lost wake-up: a query never stays pending forever while its head
\* record (the record at the validated consumer offset) is committed.  The
\* head can stop being committed only if the consumer moves its own offset
\* past it (a walk), which is its own business.
NoLostWakeup ==
    (QueryPending /\ HeadCommitted) ~> (~QueryPending \/ ~HeadCommitted)

\* A cancelled request is completed (by the handler, the waker or the
\* cancel routine).
CancelledQueryCompletes ==
    (Outstanding /\ cancelReq) ~> (q = "done")

=============================================================================
