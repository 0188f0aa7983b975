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
(*   publish   combining publish (below): offsets are published in          *)
(*             reservation order, and no producer waits on another except   *)
(*             after a collision in the offer table;                        *)
(*   Commit    submit or discard: one store of the header (in any order     *)
(*             between producers, before or after the record is published); *)
(*   Check     one load of `armed`: if it is my start + 1 and my record is  *)
(*             published (an offered one may not be yet), a query waits     *)
(*             for my record: go and Wake it;                               *)
(*   Wake      the host's wake-up, under the query lock: disarm if still    *)
(*             armed for my record, take the request from the cancel        *)
(*             machinery (WdfRequestUnmarkCancelable) and complete it.      *)
(*   Batch     (Ring::write_batch; `Batch` records at once, 0: none; only   *)
(*             the producers in `Batchers`, which write nothing else) one   *)
(*             CAS claims them all (ReserveBatch); the payloads are copied  *)
(*             and every header is written committed (WriteBatch), then one *)
(*             combining publish of the whole claim commits them all.       *)
(*   Walk      a producer that finds the ring full advances the validated   *)
(*             consumer offset over committed headers toward                *)
(*             min(consumer page, producer offset).                         *)
(*                                                                          *)
(* COMBINING PUBLISH (core/src/publish.rs) of a claim [s, e) (single        *)
(* record: e = s + 1, after Lock; batch: e = s + Batch, after WriteBatch).  *)
(* `table` (kernel page, TableSize slots, slot Idx(o) = o % TableSize)      *)
(* holds offers: claims whose headers are written, left for whoever         *)
(* publishes up to their start.                                             *)
(* Each step is one action:                                                 *)
(*   1 PubCheck       load `publishedEnd` (kernel page: the end the last    *)
(*                    owner published to): = s: owner of [s, e); else go    *)
(*                    to 2 (a stale value only sends s down the offer path, *)
(*                    whose step 3 reads the producer offset itself);       *)
(*   2 Offer          CAS table[Idx(s)] from None to [s, e): done, go to 3; *)
(*                    the slot holds another claim's offer: go to Extend;   *)
(*   3 Recheck        (SeqCst fence) load the producer offset: = s: go to   *)
(*                    4; else done publishing (someone will take it);       *)
(*   4 Reclaim        CAS table[Idx(s)] from the offer of s (as it is now:  *)
(*                    it may have grown) to None: success: owner of it;     *)
(*                    failure (a combiner took it): done;                   *)
(*   Extend           (after a collision) an offer [x, s) that ends at my   *)
(*                    start, in any slot: CAS it to [x, e): done (whoever   *)
(*                    takes it publishes my claim too); none: FallbackWait; *)
(*   FallbackWait     load the producer offset: = s: owner of [s, e); else  *)
(*                    try the Offer again (the only wait left).             *)
(* An OWNER of [x, y) (its own claim first, then the offers it takes):      *)
(*   5 Advance        store producer offset := y;                           *)
(*   6 Combine        (SeqCst fence) table[Idx(y)] holds the offer [y, z)   *)
(*                    (grown or not): CAS it to None, owner of [y, z) too,  *)
(*                    back to 5; else go to StoreEnd;                       *)
(*   StoreEnd         store publishedEnd := y (the last y), then go to 7;   *)
(*   7 CheckArmedRange  load `armed`: a head in [own start, last y) that is *)
(*                    committed (not LOCKED): Wake it.  Then a single       *)
(*                    record goes on to commit (and its own Check after); a *)
(*                    batch is finished.                                    *)
(* A producer that is done publishing without owning its claim leaves its   *)
(* wake-up to whoever publishes it (that owner's CheckArmedRange), and for  *)
(* a single record also to its own Check after its commit: whichever of     *)
(* the two comes second finds the head published and committed.             *)
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
    Batchers,    \* the producers that write batches (only batches); the others single records
    TableSize,   \* slots of the offer table of the combining publish
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
    \* a batched write checks `armed` against the last record it published only
    "batch_wake_checks_last",
    \* combining publish: a producer offers its claim and is done, without the
    \* re-check of the producer offset (step 3)
    "offer_without_recheck",
    \* combining publish: the reclaim (step 4) clears the table slot with a plain
    \* store, not a compare-and-swap, and always takes the claim back
    "reclaim_by_plain_store",
    \* the producer's checks of `armed` (after a commit, after a publish) wake
    \* without looking whether the head is published and committed (as before
    \* the combining publish, when every waker had done both itself)
    "wake_without_commit_check"
}

ASSUME Capacity \in Nat \ {0}
ASSUME MaxOffset \in Nat \ {0}
ASSUME Batch \in 0 .. Capacity
ASSUME Batchers \subseteq Producers
ASSUME Batch = 0 => Batchers = {}
ASSUME TableSize \in Nat \ {0}
ASSUME Bug \in Bugs
ASSUME Producers # {}

Slots      == 0 .. (Capacity - 1)
Offsets    == 0 .. MaxOffset
Slot(o)    == o % Capacity
Committed  == {"Submitted", "Discarded"}
TableSlots == 0 .. (TableSize - 1)
Idx(o)     == o % TableSize

HeaderValues == {"Zero", "Locked", "Submitted", "Discarded"}

\* An empty table slot.  A record like the offers (TLC does not compare a
\* string with a record); no claim is empty, so no offer equals it.
None == [start |-> 0, end |-> 0]

Offers == [start : Offsets, end : Offsets]

\* Producer program counter.
\* A single record:
\*   idle -> reserved -> locked -> PUBLISH -> published -> committed -> (waking ->) idle
\* With Bug = "lost_wakeup_check_before_commit":
\*   ... published -> loaded -> (waking ->) idle
\* A batched write (Batch > 0):
\*   idle -> batchReserved -> batchWritten -> PUBLISH -> (waking ->) idle
\* PUBLISH, the combining publish (steps 1 to 7 in the header):
\*   locked / batchWritten --PubCheck--> advancing (owner) or offering
\*   offering   --Offer-->        offered, or extending (collision)
\*   offered    --Recheck-->      reclaiming, or done
\*   reclaiming --Reclaim-->      advancing (owner), or done
\*   extending  --Extend-->       done (joined an offer), or fallback
\*   fallback   --FallbackWait--> advancing (owner), or offering (again)
\*   advancing  --Advance-->      combining
\*   combining  --Combine-->      advancing (took an offer), or storingEnd
\*   storingEnd --StoreEnd-->     checkingRange
\*   checkingRange --CheckArmedRange--> done, or a wake-up: rangeWaking (a
\*              single record: Wake, then on to commit) or waking (a batch)
\* where "done" is published (a single record, on to commit) or idle (a batch).
PublishPcs == {"offering", "offered", "reclaiming", "extending", "fallback",
               "advancing", "combining", "storingEnd", "checkingRange", "rangeWaking"}

PcValues == {"idle", "reserved", "locked", "published", "loaded", "committed", "waking",
             "batchReserved", "batchWritten"} \cup PublishPcs

\* The owner states: p owns a range of claims it is publishing.
OwnerPcs == {"advancing", "combining", "storingEnd", "checkingRange"}

\* State of the latest QUERY request: none yet; the handler runs, holding
\* the query lock ("armed", or "checked" with Bug =
\* "lost_wakeup_arm_without_recheck"); pending; or completed.
QValues == {"none", "armed", "checked", "pending", "done"}

VARIABLES
    reserveOffset,   \* kernel page: reserve_offset
    producerOffset,  \* producer page: producer_offset
    publishedEnd,    \* kernel page: published_end, the end the last owner published to
    userConsumer,    \* consumer page: consumer_offset (hostile)
    validated,       \* kernel page: validated_consumer_offset
    hdr,             \* hdr[s]: the header in slot s
    table,           \* kernel page: the offer table; table[i]: None or an offer [start, end)
    pc,              \* pc[p]: where producer p is
    mine,            \* mine[p]: the start of p's claim; 0 when idle
    isBatch,         \* isBatch[p]: p's claim is a batch (Batch records), not one record
    pubAt,           \* pubAt[p]: an owner about to Advance: the start of the range it owns next
    pubTo,           \* pubTo[p]: an owner: the end of what it owns so far (0 otherwise)
    wakeFor,         \* wakeFor[p]: the head p goes to Wake (0 otherwise)
    saw,             \* saw[p]: Bug = "lost_wakeup_check_before_commit": what p's early load said
    armed,           \* kernel page: armed = head + 1 while a query waits for head, or 0
    q,               \* the latest QUERY request's state
    qhead,           \* the head that request waits for (0 when none is outstanding)
    cancelReq,       \* the request has been cancelled
    cancelable,      \* the request is marked cancelable
    cancelOwned,     \* the framework gave the request to the cancel routine
    completions,     \* how many times the request was completed
    wokeOnLocked     \* ghost: a request was completed (not cancelled) on an uncommitted head

prodVars  == <<pc, mine, isBatch, pubAt, pubTo, wakeFor, saw>>

vars == <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table, prodVars,
          armed, q, qhead, cancelReq, cancelable, cancelOwned, completions,
          wokeOnLocked>>

queryVars == <<armed, q, qhead, cancelReq, cancelable, cancelOwned, completions,
               wokeOnLocked>>

Min(a, b) == IF a < b THEN a ELSE b
Max(a, b) == IF a > b THEN a ELSE b

\* The end of p's claim.
ClaimEnd(p) == IF isBatch[p] THEN mine[p] + Batch ELSE mine[p] + 1

\* p's claim as an offer.
MyOffer(p) == [start |-> mine[p], end |-> ClaimEnd(p)]

\* A producer owns its slot from Reserve until its commit.
Holding(p) ==
    /\ ~isBatch[p]
    /\ pc[p] \in {"reserved", "locked", "published", "loaded"} \cup PublishPcs

\* A batched writer owns its `Batch` slots from ReserveBatch until it offers
\* its claim or becomes its owner (an owner's range: OneOwner).
BatchHolding(p) ==
    /\ isBatch[p]
    /\ pc[p] \in {"batchReserved", "batchWritten", "offering", "extending", "fallback"}

\* The records of p's batch.
BatchRecords(p) == mine[p] .. (mine[p] + Batch - 1)

\* The slots p owns now.
OwnedSlots(p) ==
    IF BatchHolding(p) THEN {Slot(o) : o \in BatchRecords(p)}
    ELSE IF Holding(p) THEN {Slot(mine[p])}
    ELSE {}

\* What the code can see of record o: published, and its slot's header not
\* LOCKED (Ring::is_committed without its second half).
LooksCommitted(o) == o < producerOffset /\ hdr[Slot(o)] # "Locked"

\* Ring::is_committed: looks committed, or the validated offset has passed it.
IsCommitted(o) == LooksCommitted(o) \/ validated > o

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
      [] OTHER                                   -> IsCommitted(h)

\* The handler holds the query lock.
HandlerHoldsLock == q \in {"armed", "checked"}

Outstanding == q \in {"armed", "checked", "pending"}

-----------------------------------------------------------------------------
Init ==
    /\ reserveOffset  = 0
    /\ producerOffset = 0
    /\ publishedEnd   = 0
    /\ userConsumer   = 0
    /\ validated      = 0
    /\ hdr            = [s \in Slots |-> "Zero"]
    /\ table          = [i \in TableSlots |-> None]
    /\ pc             = [p \in Producers |-> "idle"]
    /\ mine           = [p \in Producers |-> 0]
    /\ isBatch        = [p \in Producers |-> FALSE]
    /\ pubAt          = [p \in Producers |-> 0]
    /\ pubTo          = [p \in Producers |-> 0]
    /\ wakeFor        = [p \in Producers |-> 0]
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
    /\ p \notin Batchers
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + 1 <= SpaceBase + Capacity
    /\ reserveOffset' = reserveOffset + 1
    /\ mine' = [mine EXCEPT ![p] = reserveOffset]
    /\ pc'   = [pc EXCEPT ![p] = "reserved"]
    /\ UNCHANGED <<producerOffset, publishedEnd, userConsumer, validated, hdr, table>>
    /\ UNCHANGED <<isBatch, pubAt, pubTo, wakeFor, saw>>
    /\ UNCHANGED queryVars

\* The records p claims at a time.
Want(p) == IF p \in Batchers THEN Batch ELSE 1

\* The ring looks full to a producer: it walks the validated consumer offset
\* toward the consumer page (then reserves, or fails and counts a drop).
Walk(p) ==
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + Want(p) > validated + Capacity
    /\ WalkEnd(userConsumer) > validated
    /\ validated' = WalkEnd(userConsumer)
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, hdr, table, prodVars>>
    /\ UNCHANGED queryVars

Lock(p) ==
    /\ pc[p] = "reserved"
    /\ hdr' = [hdr EXCEPT ![Slot(mine[p])] = "Locked"]
    /\ pc'  = [pc EXCEPT ![p] = "locked"]
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, table>>
    /\ UNCHANGED <<mine, isBatch, pubAt, pubTo, wakeFor, saw>>
    /\ UNCHANGED queryVars

\* ---- combining publish (Ring::publish; steps 1 to 7 of the header) ----

\* What no step of the publish changes.
pubOthers == <<reserveOffset, userConsumer, validated, hdr, saw>>

\* p owns its own claim [mine, ClaimEnd) now.
BecomeOwner(p) ==
    /\ pc'    = [pc EXCEPT ![p] = "advancing"]
    /\ pubAt' = [pubAt EXCEPT ![p] = mine[p]]
    /\ pubTo' = [pubTo EXCEPT ![p] = ClaimEnd(p)]

\* p is done publishing: a single record goes on to commit, a batch is
\* finished (its wake-up is the owner's that publishes it, or its own).
FinishPublish(p) ==
    IF isBatch[p]
      THEN /\ pc'      = [pc EXCEPT ![p] = "idle"]
           /\ mine'    = [mine EXCEPT ![p] = 0]
           /\ isBatch' = [isBatch EXCEPT ![p] = FALSE]
      ELSE /\ pc'      = [pc EXCEPT ![p] = "published"]
           /\ UNCHANGED <<mine, isBatch>>

\* 1. Load `publishedEnd`: the last owner published up to my claim, so
\* everything before it is published and I own it; else offer it.  (The
\* producer offset is then at my start too: PublishedEndSound.  A value
\* that lags behind, an owner between its Advance and its StoreEnd or two
\* owners' stores in either order, only sends me down the offer path, whose
\* Recheck reads the producer offset.)
PubCheck(p) ==
    /\ pc[p] \in {"locked", "batchWritten"}
    /\ IF publishedEnd = mine[p]
         THEN BecomeOwner(p)
         ELSE /\ pc' = [pc EXCEPT ![p] = "offering"]
              /\ UNCHANGED <<pubAt, pubTo>>
    /\ UNCHANGED <<producerOffset, publishedEnd, table, mine, isBatch, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* 2. CAS my offer into my table slot; if another claim's offer holds it (a
\* collision), try to join an offer instead (Extend).  Bug
\* "offer_without_recheck": done at once.
Offer(p) ==
    /\ pc[p] = "offering"
    /\ IF table[Idx(mine[p])] = None
         THEN /\ table' = [table EXCEPT ![Idx(mine[p])] = MyOffer(p)]
              /\ IF Bug = "offer_without_recheck"
                   THEN FinishPublish(p)
                   ELSE /\ pc' = [pc EXCEPT ![p] = "offered"]
                        /\ UNCHANGED <<mine, isBatch>>
         ELSE /\ pc' = [pc EXCEPT ![p] = "extending"]
              /\ UNCHANGED <<table, mine, isBatch>>
    /\ UNCHANGED <<producerOffset, publishedEnd, pubAt, pubTo, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* 3. (After a SeqCst fence) load the producer offset again: if it reached my
\* start, the owner that got there may have looked at my slot before my
\* offer: take it back (4).  Else whoever advances to my start will see it.
Recheck(p) ==
    /\ pc[p] = "offered"
    /\ IF producerOffset = mine[p]
         THEN /\ pc' = [pc EXCEPT ![p] = "reclaiming"]
              /\ UNCHANGED <<mine, isBatch>>
         ELSE FinishPublish(p)
    /\ UNCHANGED <<producerOffset, publishedEnd, table, pubAt, pubTo, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* The offer of the claim that starts at o, if it is in its slot.
OfferAt(o) == table[Idx(o)] # None /\ table[Idx(o)].start = o

\* 4. CAS my slot from my offer, as it is now (claims may have joined it:
\* Extend), to None: success, I own it all; failure, a combiner took it and
\* publishes it.  Bug "reclaim_by_plain_store": a plain store of None, and I
\* own my claim whatever the slot held.
Reclaim(p) ==
    /\ pc[p] = "reclaiming"
    /\ IF OfferAt(mine[p]) \/ Bug = "reclaim_by_plain_store"
         THEN /\ table' = [table EXCEPT ![Idx(mine[p])] = None]
              /\ pc'    = [pc EXCEPT ![p] = "advancing"]
              /\ pubAt' = [pubAt EXCEPT ![p] = mine[p]]
              /\ pubTo' = [pubTo EXCEPT ![p] = IF OfferAt(mine[p]) /\ Bug # "reclaim_by_plain_store"
                                                THEN table[Idx(mine[p])].end
                                                ELSE ClaimEnd(p)]
              /\ UNCHANGED <<mine, isBatch>>
         ELSE /\ FinishPublish(p)
              /\ UNCHANGED <<table, pubAt, pubTo>>
    /\ UNCHANGED <<producerOffset, publishedEnd, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* After a collision: join an offer that ends where my claim starts (a CAS
\* that grows it to my end), in any slot; whoever takes that offer publishes
\* my claim with it.  The code's scan of the slots is one step here: it
\* changes nothing until its CAS, and an offer it misses is one it would not
\* have found a step earlier or later.  (A join by a load and a plain store
\* instead, checked by hand with a throw-away bug: the owner takes the offer
\* between the two, the store puts it back grown over claims the owner is
\* publishing, and OffersAreFresh fails in 18 steps; the cfg was left out
\* for the time it takes.)
Extend(p) ==
    /\ pc[p] = "extending"
    /\ IF \E i \in TableSlots : table[i] # None /\ table[i].end = mine[p]
         THEN LET i == CHOOSE i \in TableSlots : table[i] # None /\ table[i].end = mine[p]
              IN /\ table' = [table EXCEPT ![i] = [start |-> table[i].start, end |-> ClaimEnd(p)]]
                 /\ FinishPublish(p)
         ELSE /\ pc' = [pc EXCEPT ![p] = "fallback"]
              /\ UNCHANGED <<table, mine, isBatch>>
    /\ UNCHANGED <<producerOffset, publishedEnd, pubAt, pubTo, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* No offer to join: if the producer offset is at my start, own my claim;
\* else (after Hooks::relax) try my slot again: the only wait left.
FallbackWait(p) ==
    /\ pc[p] = "fallback"
    /\ IF producerOffset = mine[p]
         THEN BecomeOwner(p)
         ELSE /\ pc' = [pc EXCEPT ![p] = "offering"]
              /\ UNCHANGED <<pubAt, pubTo>>
    /\ UNCHANGED <<producerOffset, publishedEnd, table, mine, isBatch, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* 5. The owner publishes what it owns: the release store of the producer
\* offset (the store of the store-load pairs with Recheck and with
\* `arm_query`).
Advance(p) ==
    /\ pc[p] = "advancing"
    /\ producerOffset' = pubTo[p]
    /\ pc'    = [pc EXCEPT ![p] = "combining"]
    /\ pubAt' = [pubAt EXCEPT ![p] = 0]
    /\ UNCHANGED <<publishedEnd, table, mine, isBatch, pubTo, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* 6. (After a SeqCst fence) is the claim that starts where I stopped on
\* offer?  Take it (the CAS from that offer as I read it, grown or not, to
\* None) and publish it too; else go and check `armed`.  The code first
\* looks whether anyone claimed past my end (reserve offset = my end: then no
\* offer can start there); in the model that changes no outcome, so it is
\* not a step.
Combine(p) ==
    /\ pc[p] = "combining"
    /\ LET e == table[Idx(pubTo[p])] IN
       IF OfferAt(pubTo[p])
         THEN /\ table' = [table EXCEPT ![Idx(pubTo[p])] = None]
              /\ pc'    = [pc EXCEPT ![p] = "advancing"]
              /\ pubAt' = [pubAt EXCEPT ![p] = e.start]
              /\ pubTo' = [pubTo EXCEPT ![p] = e.end]
         ELSE /\ pc'    = [pc EXCEPT ![p] = "storingEnd"]
              /\ UNCHANGED <<table, pubAt, pubTo>>
    /\ UNCHANGED <<producerOffset, publishedEnd, mine, isBatch, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* After the last Combine (no offer at my end): store publishedEnd := the
\* end I published to, a release store after my last Advance, so that the
\* producer of the claim that starts there finds it in its PubCheck.  Only
\* owners store it, each the value it stored in the producer offset.
StoreEnd(p) ==
    /\ pc[p] = "storingEnd"
    /\ publishedEnd' = pubTo[p]
    /\ pc' = [pc EXCEPT ![p] = "checkingRange"]
    /\ UNCHANGED <<producerOffset, table, mine, isBatch, pubAt, pubTo, wakeFor>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* 7. One load of `armed` after the publish (the SeqCst fence of step 6 is
\* between): does a query wait for a record I published, and is it
\* committed?  Then wake it, for that head.  A record I published may still
\* be LOCKED: its commit's check wakes the query then.  The code reads the
\* head's header (not LOCKED); here it is IsCommitted(head), whose
\* "validated > head" half stands for the code's wake by a walk that passes
\* the armed head (Ring::wake_query_passed, not in this model), which covers
\* a head whose slot a newer record reuses.  For a single record's owner the
\* only head in range can be its own record, still LOCKED (the validated
\* offset cannot pass it), so it never wakes anything; a batch's owner wakes
\* records it published, its own or those it took on offer.  Bug
\* "batch_wake_checks_last": a batched write looks at the last record it
\* published only.  Bug "wake_without_commit_check": no look at the header.
CheckArmedRange(p) ==
    /\ pc[p] = "checkingRange"
    /\ LET wake == IF Bug = "batch_wake_checks_last" /\ isBatch[p]
                      THEN armed = pubTo[p]
                      ELSE /\ armed > 0
                           /\ armed - 1 \in mine[p] .. (pubTo[p] - 1)
                           /\ (IsCommitted(armed - 1) \/ Bug = "wake_without_commit_check")
       IN IF wake
            THEN /\ pc'      = [pc EXCEPT ![p] = IF isBatch[p] THEN "waking" ELSE "rangeWaking"]
                 /\ wakeFor' = [wakeFor EXCEPT ![p] = armed - 1]
                 \* a batch is finished: only its wake-up is left
                 /\ mine'    = [mine EXCEPT ![p] = IF isBatch[p] THEN 0 ELSE @]
                 /\ isBatch' = [isBatch EXCEPT ![p] = FALSE]
            ELSE /\ FinishPublish(p)
                 /\ UNCHANGED wakeFor
    /\ pubTo' = [pubTo EXCEPT ![p] = 0]
    /\ UNCHANGED <<producerOffset, publishedEnd, table, pubAt>>
    /\ UNCHANGED pubOthers
    /\ UNCHANGED queryVars

\* ---- commit ----

\* The one load of `armed` after a commit: does a query wait for my record?
ArmedForMe(p) == armed = mine[p] + 1

\* ... and is my record published (Ring::published_past)?  An offered record
\* may be committed before an owner publishes it; that owner's
\* CheckArmedRange wakes the query then.  Bug "wake_without_commit_check":
\* no look at the producer offset.
WakeAfterCommit(p) ==
    ArmedForMe(p) /\ (mine[p] < producerOffset \/ Bug = "wake_without_commit_check")

\* Bug "lost_wakeup_check_before_commit": the load of `armed` comes first.
LoadArmedEarly(p) ==
    /\ Bug = "lost_wakeup_check_before_commit"
    /\ pc[p] = "published"
    /\ saw' = [saw EXCEPT ![p] = ArmedForMe(p)]
    /\ pc'  = [pc EXCEPT ![p] = "loaded"]
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table>>
    /\ UNCHANGED <<mine, isBatch, pubAt, pubTo, wakeFor>>
    /\ UNCHANGED queryVars

\* Submit or discard: one release store of the header (v), then the check of
\* `armed` (or, with the bug, after the early load: wake if it matched).  The
\* record may not be published yet: an owner publishes it later.
CanCommit(p) ==
    \/ Bug # "lost_wakeup_check_before_commit" /\ pc[p] = "published"
    \/ Bug = "lost_wakeup_check_before_commit" /\ pc[p] = "loaded"

CommitAs(p, v) ==
    /\ hdr' = [hdr EXCEPT ![Slot(mine[p])] = v]
    /\ IF Bug = "lost_wakeup_check_before_commit"
         THEN /\ pc'      = [pc EXCEPT ![p] = IF saw[p] THEN "waking" ELSE "idle"]
              /\ wakeFor' = [wakeFor EXCEPT ![p] = IF saw[p] THEN mine[p] ELSE 0]
              /\ mine'    = [mine EXCEPT ![p] = 0]
              /\ saw'     = [saw EXCEPT ![p] = FALSE]
         ELSE /\ pc'      = [pc EXCEPT ![p] = "committed"]
              /\ UNCHANGED <<mine, saw, wakeFor>>
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, table>>
    /\ UNCHANGED <<isBatch, pubAt, pubTo>>
    /\ UNCHANGED queryVars

Submit(p) ==
    /\ CanCommit(p)
    /\ CommitAs(p, "Submitted")

Discard(p) ==
    /\ CanCommit(p)
    /\ CommitAs(p, "Discarded")

CheckArmed(p) ==
    /\ pc[p] = "committed"
    /\ pc'      = [pc EXCEPT ![p] = IF WakeAfterCommit(p) THEN "waking" ELSE "idle"]
    /\ wakeFor' = [wakeFor EXCEPT ![p] = IF WakeAfterCommit(p) THEN mine[p] ELSE 0]
    /\ mine'    = [mine EXCEPT ![p] = 0]
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table>>
    /\ UNCHANGED <<isBatch, pubAt, pubTo, saw>>
    /\ UNCHANGED queryVars

\* ---- batched writes (Ring::write_batch) ----

\* One compare-and-swap claims `Batch` records, against the validated offset.
ReserveBatch(p) ==
    /\ p \in Batchers
    /\ pc[p] = "idle"
    /\ reserveOffset + Batch <= MaxOffset
    /\ reserveOffset + Batch <= SpaceBase + Capacity
    /\ reserveOffset' = reserveOffset + Batch
    /\ mine'    = [mine EXCEPT ![p] = reserveOffset]
    /\ isBatch' = [isBatch EXCEPT ![p] = TRUE]
    /\ pc'      = [pc EXCEPT ![p] = "batchReserved"]
    /\ UNCHANGED <<producerOffset, publishedEnd, userConsumer, validated, hdr, table>>
    /\ UNCHANGED <<pubAt, pubTo, wakeFor, saw>>
    /\ UNCHANGED queryVars

\* The payloads are copied and every header written as submitted, with no
\* LOCKED phase: nobody reads a header at or above the producer offset (the
\* walk, the consumer and Ring::is_committed stop there), so the header
\* stores are relaxed in the code and one step here.  Then the combining
\* publish of the whole claim (PubCheck ...) commits them all at once.
WriteBatch(p) ==
    /\ pc[p] = "batchReserved"
    /\ hdr' = [s \in Slots |-> IF s \in OwnedSlots(p) THEN "Submitted" ELSE hdr[s]]
    /\ pc'  = [pc EXCEPT ![p] = "batchWritten"]
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, table>>
    /\ UNCHANGED <<mine, isBatch, pubAt, pubTo, wakeFor, saw>>
    /\ UNCHANGED queryVars

\* Complete the request (not as a cancel): disarm, count, and note whether
\* the head it waits for was committed.  `base`: completions so far.
CompleteOn(h, base) ==
    /\ completions'  = base + 1
    /\ q'            = "done"
    /\ qhead'        = 0
    /\ armed'        = 0
    /\ wokeOnLocked' = (wokeOnLocked \/ ~RecordCommitted(h))

\* The host's wake-up for head h = wakeFor[p], under the query lock.  If the
\* query is still armed for h, disarm it (Ring::disarm_query_for), then
\* complete the request only if WdfRequestUnmarkCancelable succeeds;
\* otherwise the cancel routine owns it.  The code unmarks in the same locked
\* step (Platform::take_query) and completes after releasing the lock, which
\* no other party can tell apart: an unmarked request is the waker's.  Bug
\* "cancel_double_complete": complete it whatever UnmarkCancelable says.
\* Bug "wake_without_disarm": complete whatever request is pending, armed
\* for h or not.  The request is judged on its own head (qhead), not on h.
\* Bug "wake_without_lock": wake while the handler holds the lock (between
\* its arm and its pend).  A single record's owner that wakes before its
\* commit (rangeWaking: only with Bug "wake_without_commit_check") goes on
\* to commit; any other waker is finished.
Wake(p) ==
    /\ pc[p] \in {"waking", "rangeWaking"}
    /\ (~HandlerHoldsLock \/ Bug = "wake_without_lock")
    /\ IF pc[p] = "rangeWaking"
         THEN /\ pc' = [pc EXCEPT ![p] = "published"]
              /\ UNCHANGED <<mine, isBatch>>
         ELSE /\ pc' = [pc EXCEPT ![p] = "idle"]
              /\ UNCHANGED <<mine, isBatch>>
    /\ wakeFor' = [wakeFor EXCEPT ![p] = 0]
    /\ IF armed = wakeFor[p] + 1 \/ (Bug = "wake_without_disarm" /\ q = "pending")
         THEN IF cancelable \/ Bug = "cancel_double_complete"
                THEN /\ CompleteOn(qhead, completions)
                     /\ cancelable' = FALSE
                     /\ UNCHANGED <<cancelReq, cancelOwned>>
                ELSE /\ armed' = 0
                     /\ UNCHANGED <<q, qhead, cancelReq, cancelable, cancelOwned,
                                    completions, wokeOnLocked>>
         ELSE UNCHANGED queryVars
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table>>
    /\ UNCHANGED <<pubAt, pubTo, saw>>

\* ---- the hostile consumer ----

UserWrite(v) ==
    /\ v # userConsumer
    /\ userConsumer' = v
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, validated, hdr, table, prodVars>>
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
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, hdr, table, prodVars>>

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
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table, prodVars>>

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
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, hdr, table, prodVars>>

QueryArmPend ==
    /\ q = "checked"
    /\ PendOrCancelled(qhead + 1)
    /\ UNCHANGED <<cancelReq, cancelOwned>>
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table, prodVars>>

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
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table, prodVars>>

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
    /\ UNCHANGED <<reserveOffset, producerOffset, publishedEnd, userConsumer, validated, hdr, table, prodVars>>

-----------------------------------------------------------------------------
ProducerStep(p) ==
    \/ Lock(p)
    \/ PubCheck(p)
    \/ Offer(p)
    \/ Recheck(p)
    \/ Reclaim(p)
    \/ Extend(p)
    \/ FallbackWait(p)
    \/ Advance(p)
    \/ Combine(p)
    \/ StoreEnd(p)
    \/ CheckArmedRange(p)
    \/ LoadArmedEarly(p)
    \/ Submit(p)
    \/ Discard(p)
    \/ CheckArmed(p)
    \/ WriteBatch(p)
    \/ Wake(p)

HandlerStep == QueryRecheck \/ QueryArmPend

\* Each action on its own line, so counterexamples and statistics name it.
Next ==
    \/ \E p \in Producers : Reserve(p)
    \/ \E p \in Producers : Walk(p)
    \/ \E p \in Producers : Lock(p)
    \/ \E p \in Producers : PubCheck(p)
    \/ \E p \in Producers : Offer(p)
    \/ \E p \in Producers : Recheck(p)
    \/ \E p \in Producers : Reclaim(p)
    \/ \E p \in Producers : Extend(p)
    \/ \E p \in Producers : FallbackWait(p)
    \/ \E p \in Producers : Advance(p)
    \/ \E p \in Producers : Combine(p)
    \/ \E p \in Producers : StoreEnd(p)
    \/ \E p \in Producers : CheckArmedRange(p)
    \/ \E p \in Producers : LoadArmedEarly(p)
    \/ \E p \in Producers : Submit(p)
    \/ \E p \in Producers : Discard(p)
    \/ \E p \in Producers : CheckArmed(p)
    \/ \E p \in Producers : ReserveBatch(p)
    \/ \E p \in Producers : WriteBatch(p)
    \/ \E p \in Producers : Wake(p)
    \/ \E v \in Offsets : UserWrite(v)
    \/ QueryStart
    \/ QueryStartCheck
    \/ QueryRecheck
    \/ QueryArmPend
    \/ Cancel
    \/ CancelRoutine

\* Producers that have reserved finish their record, its publish and their
\* wake-up; the handler finishes the request it started; the cancel routine
\* runs.  Nobody is forced to reserve, walk, write the consumer offset, issue
\* a query or cancel one.
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
    /\ publishedEnd   \in 0 .. MaxOffset
    /\ userConsumer   \in Offsets
    /\ validated      \in 0 .. MaxOffset
    /\ hdr            \in [Slots -> HeaderValues]
    /\ table          \in [TableSlots -> {None} \cup Offers]
    /\ pc             \in [Producers -> PcValues]
    /\ mine           \in [Producers -> 0 .. MaxOffset]
    /\ isBatch        \in [Producers -> BOOLEAN]
    /\ pubAt          \in [Producers -> 0 .. MaxOffset]
    /\ pubTo          \in [Producers -> 0 .. MaxOffset]
    /\ wakeFor        \in [Producers -> 0 .. MaxOffset]
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
\* producers' records lie below the reserve offset; every header below the
\* producer offset has been written (no claim is published before its
\* producer wrote its header: LOCKED, or a batch's committed ones).
OffsetsConsistent ==
    /\ validated <= producerOffset
    /\ producerOffset <= reserveOffset
    /\ \A p \in Producers : Holding(p) => mine[p] < reserveOffset
    /\ \A p \in Producers : pc[p] \in {"reserved", "batchReserved"} => producerOffset <= mine[p]
    /\ \A p \in Producers : BatchHolding(p) =>
           mine[p] + Batch <= reserveOffset /\ producerOffset <= mine[p]
    /\ \A p \in Producers : pc[p] \in OwnerPcs => pubTo[p] <= reserveOffset

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

\* ---- combining publish ----

\* No double publish: at most one producer is about to Advance (step 5), and
\* the range it owns starts at the producer offset; an owner that has
\* advanced (steps 6, 7) has published all it owns.  (Another producer may
\* become an owner while one is at step 6: its claim starts where that one
\* stopped, which that one's Combine then does not find on offer.)
OneOwner ==
    /\ \A p1, p2 \in Producers :
           p1 # p2 => ~(pc[p1] = "advancing" /\ pc[p2] = "advancing")
    /\ \A p \in Producers :
           pc[p] = "advancing" => pubAt[p] = producerOffset /\ pubAt[p] < pubTo[p]
    /\ \A p \in Producers :
           pc[p] \in {"combining", "storingEnd", "checkingRange"} =>
               mine[p] < pubTo[p] /\ pubTo[p] <= producerOffset

\* The claims still in their producers' hands, before they offer them.
PreOfferPcs == {"reserved", "locked", "batchReserved", "batchWritten",
                "offering", "extending", "fallback"}

\* Every offer in the table is one or more whole claims (one, and those that
\* joined it) not published yet, in the slot of its start; no two offers and
\* no offer and a claim in its producer's hands or in the range an owner is
\* about to publish overlap; and the producer of its first claim, if it is
\* still at that claim, is past its Offer (step 2): offered, reclaiming, or
\* done publishing.
OffersAreFresh ==
    \A i \in TableSlots : table[i] # None =>
        LET e == table[i] IN
        /\ Idx(e.start) = i
        /\ producerOffset <= e.start
        /\ e.start < e.end
        /\ e.end <= reserveOffset
        /\ \A j \in TableSlots :
               (j # i /\ table[j] # None) => (e.end <= table[j].start \/ table[j].end <= e.start)
        /\ \A p \in Producers :
               pc[p] \in PreOfferPcs => (e.end <= mine[p] \/ ClaimEnd(p) <= e.start)
        /\ \A p \in Producers :
               pc[p] = "advancing" => (e.end <= pubAt[p] \/ pubTo[p] <= e.start)
        /\ \A p \in Producers :
               (pc[p] # "idle" /\ mine[p] = e.start) =>
                   pc[p] \in {"offered", "reclaiming", "published", "loaded", "committed",
                              "waking", "rangeWaking"}

\* No claim is lost: every reserved record that is not published yet is in
\* its producer's hands (before it gives it away), on offer, or in the range
\* an owner is about to publish.
NoClaimLost ==
    \A o \in producerOffset .. (reserveOffset - 1) :
        \/ \E p \in Producers :
               /\ pc[p] \in PreOfferPcs \cup {"offered", "reclaiming"}
               /\ mine[p] <= o /\ o < ClaimEnd(p)
        \/ \E i \in TableSlots : table[i] # None /\ table[i].start <= o /\ o < table[i].end
        \/ \E p \in Producers : pc[p] = "advancing" /\ pubAt[p] <= o /\ o < pubTo[p]

\* Nothing is stranded: when every producer is idle, everything reserved is
\* published and the table is empty.
QuiescentIsPublished ==
    (\A p \in Producers : pc[p] = "idle") =>
        /\ producerOffset = reserveOffset
        /\ \A i \in TableSlots : table[i] = None

\* PubCheck's test is enough: publishedEnd never runs ahead of the producer
\* offset (an owner stores it after its Advance, the value it advanced to),
\* so a producer still before its PubCheck that finds publishedEnd at its
\* start finds the producer offset there too (the producer offset cannot
\* pass a claim that is not published, nor offered, yet).
PublishedEndSound ==
    /\ publishedEnd <= producerOffset
    /\ \A p \in Producers :
           (pc[p] \in {"locked", "batchWritten"} /\ publishedEnd = mine[p]) =>
               producerOffset = mine[p]

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

\* Every claim is eventually published (nobody waits forever, nothing is
\* stranded on offer).  In the design the producer offset only grows and
\* both offsets are bounded, so this is the same as: for every record o,
\* (o < reserveOffset) ~> (o < producerOffset).
ClaimsPublished ==
    (producerOffset < reserveOffset) ~> (producerOffset = reserveOffset)

=============================================================================
