--------------------------- MODULE RingBufferModel ---------------------------
(***************************************************************************)
(* A bounded model of the ring buffer map: one producer, one consumer.      *)
(*                                                                          *)
(*  - The producer reserves space, locks the record's header (writes it     *)
(*    with LOCKED set) and publishes the producer offset; later it submits  *)
(*    or discards the record, which unlocks it.                             *)
(*  - The consumer reads the next record in order (stopping at a LOCKED     *)
(*    one, skipping a DISCARDED one) and returns space by advancing the     *)
(*    consumer offset.                                                      *)
(*  - One async query at a time; it completes when producer > consumer.     *)
(*                                                                          *)
(* Offsets are 0, 1, 2, ... and every record takes one abstract unit, so    *)
(* the record that starts at offset o lives in slot o % Capacity.  The      *)
(* header memory is per slot: a slot that has not been locked for the       *)
(* current record still holds whatever the previous lap left there (or      *)
(* "Zero" on the first lap), and the consumer cannot tell the difference.   *)
(* The ghost variable `status` says what each record really is.            *)
(*                                                                          *)
(* PublishBeforeLock = TRUE is the bug: the producer publishes the new      *)
(* producer offset in the same step as it reserves, and locks the header    *)
(* only afterwards, so the consumer can take a stale header for a           *)
(* committed record.  `Safety` catches it.                                  *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS
    Capacity,           \* slots in the ring (abstract units)
    MaxOffset,          \* bound on the number of records ever reserved
    MaxLiveRecords,     \* bound on records reserved but not yet submitted/discarded
    PublishBeforeLock   \* TRUE: the buggy order (publish, then lock the header)

ASSUME Capacity \in Nat \ {0}
ASSUME MaxOffset \in Nat \ {0}
ASSUME MaxLiveRecords \in Nat \ {0}
ASSUME PublishBeforeLock \in BOOLEAN

Slots    == 0 .. (Capacity - 1)
Offsets  == 0 .. (MaxOffset - 1)
NoRecord == MaxOffset            \* `held` when the consumer holds nothing

\* What a header in memory can say.  "Zero" is never-written memory; to the
\* consumer it looks like an unlocked, undiscarded (so consumable) record.
HeaderValues == {"Zero", "Locked", "Submitted", "Discarded"}

\* What a record really is (ghost).  "Reserved": space taken, header not
\* written yet (only reachable with PublishBeforeLock).
StatusValues == {"Free", "Reserved", "Locked", "Submitted", "Discarded"}

VARIABLES
    reserveOffset,   \* producer-private: end of the last reservation
    producerOffset,  \* published producer offset (producer page)
    consumerOffset,  \* consumer offset returned to the producer (consumer page)
    readOffset,      \* consumer-private: next record to read
    held,            \* offset of the record the consumer holds, or NoRecord
    hdr,             \* hdr[s]: the header stored in slot s
    status,          \* status[o]: ghost, what record o really is
    queryPending     \* an async query is pending

vars == <<reserveOffset, producerOffset, consumerOffset, readOffset, held,
          hdr, status, queryPending>>

Slot(o) == o % Capacity

Live == {o \in Offsets : status[o] \in {"Reserved", "Locked"}}

-----------------------------------------------------------------------------
Init ==
    /\ reserveOffset  = 0
    /\ producerOffset = 0
    /\ consumerOffset = 0
    /\ readOffset     = 0
    /\ held           = NoRecord
    /\ hdr            = [s \in Slots |-> "Zero"]
    /\ status         = [o \in Offsets |-> "Free"]
    /\ queryPending   = FALSE

\* Reserve one unit.  Space is checked against the consumer offset.
CanReserve ==
    /\ reserveOffset < MaxOffset
    /\ reserveOffset - consumerOffset < Capacity
    /\ Cardinality(Live) < MaxLiveRecords

\* Correct order, step 1: reserve and write the header with LOCKED set.
ReserveAndLock ==
    /\ ~PublishBeforeLock
    /\ CanReserve
    /\ hdr'           = [hdr EXCEPT ![Slot(reserveOffset)] = "Locked"]
    /\ status'        = [status EXCEPT ![reserveOffset] = "Locked"]
    /\ reserveOffset' = reserveOffset + 1
    /\ UNCHANGED <<producerOffset, consumerOffset, readOffset, held, queryPending>>

\* Correct order, step 2: publish the producer offset (release store).
Publish ==
    /\ ~PublishBeforeLock
    /\ producerOffset < reserveOffset
    /\ producerOffset' = reserveOffset
    /\ UNCHANGED <<reserveOffset, consumerOffset, readOffset, held, hdr, status,
                   queryPending>>

\* Buggy order, step 1: reserve and publish at once; the header is stale.
ReserveAndPublish ==
    /\ PublishBeforeLock
    /\ CanReserve
    /\ status'         = [status EXCEPT ![reserveOffset] = "Reserved"]
    /\ reserveOffset'  = reserveOffset + 1
    /\ producerOffset' = reserveOffset + 1
    /\ UNCHANGED <<consumerOffset, readOffset, held, hdr, queryPending>>

\* Buggy order, step 2: lock the header of a reserved record.
LockHeader(o) ==
    /\ PublishBeforeLock
    /\ status[o] = "Reserved"
    /\ hdr'    = [hdr EXCEPT ![Slot(o)] = "Locked"]
    /\ status' = [status EXCEPT ![o] = "Locked"]
    /\ UNCHANGED <<reserveOffset, producerOffset, consumerOffset, readOffset,
                   held, queryPending>>

\* Submit or discard a locked record: one store of the header.
CommitAs(o, v) ==
    /\ hdr'    = [hdr EXCEPT ![Slot(o)] = v]
    /\ status' = [status EXCEPT ![o] = v]
    /\ UNCHANGED <<reserveOffset, producerOffset, consumerOffset, readOffset,
                   held, queryPending>>

Submit(o) ==
    /\ status[o] = "Locked"
    /\ CommitAs(o, "Submitted")

Discard(o) ==
    /\ status[o] = "Locked"
    /\ CommitAs(o, "Discarded")

\* The consumer looks at the next record: LOCKED stops it (no step),
\* DISCARDED is skipped, anything else is handed out.
ConsumerRead ==
    /\ held = NoRecord
    /\ readOffset < producerOffset
    /\ LET h == hdr[Slot(readOffset)] IN
         /\ h # "Locked"
         /\ IF h = "Discarded"
              THEN /\ readOffset' = readOffset + 1
                   /\ UNCHANGED held
              ELSE /\ held' = readOffset
                   /\ UNCHANGED readOffset
    /\ UNCHANGED <<reserveOffset, producerOffset, consumerOffset, hdr, status,
                   queryPending>>

\* The consumer is done with the record it holds.
ConsumerDone ==
    /\ held # NoRecord
    /\ readOffset' = held + 1
    /\ held'       = NoRecord
    /\ UNCHANGED <<reserveOffset, producerOffset, consumerOffset, hdr, status,
                   queryPending>>

\* Return space: store the consumer offset (once per batch).
ReturnSpace ==
    /\ held = NoRecord
    /\ consumerOffset < readOffset
    /\ consumerOffset' = readOffset
    /\ UNCHANGED <<reserveOffset, producerOffset, readOffset, held, hdr, status,
                   queryPending>>

\* The consumer issues an async query (at most one pending).
QueryArm ==
    /\ ~queryPending
    /\ queryPending' = TRUE
    /\ UNCHANGED <<reserveOffset, producerOffset, consumerOffset, readOffset,
                   held, hdr, status>>

\* The pending query completes once producer > consumer.
QueryComplete ==
    /\ queryPending
    /\ producerOffset > consumerOffset
    /\ queryPending' = FALSE
    /\ UNCHANGED <<reserveOffset, producerOffset, consumerOffset, readOffset,
                   held, hdr, status>>

Next ==
    \/ ReserveAndLock
    \/ Publish
    \/ ReserveAndPublish
    \/ \E o \in Offsets : LockHeader(o)
    \/ \E o \in Offsets : Submit(o)
    \/ \E o \in Offsets : Discard(o)
    \/ ConsumerRead
    \/ ConsumerDone
    \/ ReturnSpace
    \/ QueryArm
    \/ QueryComplete

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ reserveOffset  \in 0 .. MaxOffset
    /\ producerOffset \in 0 .. MaxOffset
    /\ consumerOffset \in 0 .. MaxOffset
    /\ readOffset     \in 0 .. MaxOffset
    /\ held           \in Offsets \cup {NoRecord}
    /\ hdr            \in [Slots -> HeaderValues]
    /\ status         \in [Offsets -> StatusValues]
    /\ queryPending   \in BOOLEAN

\* consumer <= read <= producer <= reserve <= consumer + Capacity, and the
\* held record is the one at the read offset.
OffsetsConsistent ==
    /\ consumerOffset <= readOffset
    /\ readOffset     <= producerOffset
    /\ producerOffset <= reserveOffset
    /\ reserveOffset  <= consumerOffset + Capacity
    /\ held \in {NoRecord, readOffset}

\* Records below the reserve offset have been reserved, the others not; at
\* most MaxLiveRecords are live.
StatusConsistent ==
    /\ \A o \in Offsets : (status[o] = "Free") <=> (o >= reserveOffset)
    /\ Cardinality(Live) <= MaxLiveRecords

\* A slot between the consumer and the reserve offset holds its record's
\* header once that record's header has been written.
HeadersConsistent ==
    \A o \in Offsets :
        (o >= consumerOffset /\ o < reserveOffset /\ status[o] # "Reserved")
            => hdr[Slot(o)] = status[o]

\* The seed's property: the consumer never holds a record that is not Submitted.
Safety == held # NoRecord => status[held] = "Submitted"

=============================================================================
