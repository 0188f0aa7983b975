--------------------------- MODULE ConsumerHandover ---------------------------
(***************************************************************************)
(* Consumers over time (issue 8): who may move the validated consumer     *)
(* offset, and how one consumer hands over to the next.                    *)
(*                                                                          *)
(* The design (notes of issue 8; core/src/mapping.rs, consumer_offset.rs,   *)
(* device.rs):                                                              *)
(*   - every MAP gets a fresh consumer page, set to the validated offset;   *)
(*     the ring holds `attached`, the generation of the current mapping     *)
(*     (0: none), and producers read only that mapping's page;              *)
(*   - every walk that uses an untrusted hint runs inside a gate:           *)
(*       enter(g): walkers += 1; if attached # g: walkers -= 1, skip;       *)
(*       load the hint, walk and CAS the validated offset; exit: walkers-=1 *)
(*     (a producer's page walk: g = attached; a QUERY: g = the mapping its  *)
(*     handle holds);                                                       *)
(*   - retire of mapping g (UNMAP, close, crash):                           *)
(*       a. a last walk from g's page,  b. attached := 0,                   *)
(*       c. wait until walkers = 0,     d. final := validated;              *)
(*   - MAP only when nothing is attached and no retire runs; the consumer   *)
(*     starts at the validated offset (= the last final);                   *)
(*   - QUERY only from the handle that holds the mapping; from any other    *)
(*     handle it is refused and changes nothing.                            *)
(*                                                                          *)
(* The current consumer is honest: it reads records in order and returns   *)
(* space up to what it read, by writing its page and by the offset its      *)
(* QUERY carries (a hostile current consumer only starves itself: that is   *)
(* RingBufferMP's userConsumer).  Once its retire is complete, a former     *)
(* consumer writes anything into its old page, at any time.  A handle that  *)
(* is not the mapping (one that never mapped, or the former consumer's      *)
(* after UNMAP) sends QUERYs with any offset.                               *)
(*                                                                          *)
(* Records take one abstract unit and are always submitted (no discards).   *)
(* `Bug` selects one deliberate mistake (see Bugs); "none" is the design.   *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS
    Producers,   \* set of producer ids (model values)
    Capacity,    \* slots in the ring
    MaxOffset,   \* bound on the number of records ever reserved
    MaxMaps,     \* bound on the number of mappings (consumers over time)
    Bug          \* which deliberate mistake the model makes, or "none"

Bugs == {
    "none",
    \* one consumer page shared by every mapping over time (MAP resets it)
    "shared_consumer_page",
    \* a QUERY from a handle that is not the mapping walks its offset, as if it
    \* were the current mapping's
    "query_from_any_handle",
    \* retire does not wait for the walkers in the gate (step c skipped)
    "map_without_drain",
    \* the gate's check asks whether anything is attached, not whether the
    \* walk's own generation is
    "gate_without_generation"
}

ASSUME Capacity \in Nat \ {0}
ASSUME MaxOffset \in Nat \ {0}
ASSUME MaxMaps \in Nat \ {0}
ASSUME Bug \in Bugs
ASSUME Producers # {}

Slots   == 0 .. (Capacity - 1)
Offsets == 0 .. MaxOffset
Records == 0 .. (MaxOffset - 1)
Gens    == 0 .. MaxMaps
Pages   == 1 .. MaxMaps
Slot(o) == o % Capacity

HeaderValues == {"Zero", "Locked", "Submitted"}

\* Producer program counter: a record (idle -> locked -> published -> idle)
\* or a page walk through the gate (idle -> w_entered -> w_checked -> w_loaded
\* -> idle).
PcValues == {"idle", "locked", "published", "w_entered", "w_checked", "w_loaded"}
InGate   == {"w_entered", "w_checked", "w_loaded"}

\* The latest mapping's consumer: never mapped or gone ("none"), mapped, or
\* being retired, before step a, b, c or d.
CstValues == {"none", "mapped", "ret_a", "ret_b", "ret_c", "ret_d"}

\* The mapping's QUERY: none in progress, started (generation and offset
\* taken, not yet in the gate), in the gate before its check, or past it.
QsValues == {"idle", "started", "entered", "checked"}

VARIABLES
    reserveOffset,   \* kernel page: reserve_offset
    producerOffset,  \* producer page: producer_offset
    validated,       \* kernel page: validated_consumer_offset (VCO)
    hdr,             \* hdr[s]: the header in slot s
    pc,              \* pc[p]: where producer p is
    mine,            \* mine[p]: the offset of p's record (0 when none)
    pg,              \* pg[p]: the generation p entered the gate with (0: none)
    ph,              \* ph[p]: the hint p loaded from that mapping's page
    walkers,         \* Ring::hint_walkers: parties inside the gate
    attached,        \* Ring::attached: the current mapping's generation, 0: none
    gen,             \* the latest mapping's generation (0: no MAP yet)
    cst,             \* the latest mapping's consumer: see CstValues
    page,            \* page[i]: consumer page i (shared bug: every mapping uses page 1)
    rd,              \* the latest consumer's read position
    cret,            \* the position it has returned (page store or QUERY offset)
    cstart,          \* the offset its MAP reply gave it: where it started
    qs,              \* its QUERY: see QsValues
    qg,              \* the generation that QUERY entered the gate with
    qhint,           \* the consumer offset that QUERY carries
    lastFinal,       \* step d of the last retire: the final validated offset
    committed,       \* ghost: the records whose submit has been stored
    delivered,       \* ghost: records delivered, and still owed to nobody (see Map)
    predFinal,       \* ghost: lastFinal when the latest consumer mapped
    pageStale,       \* ghost: pageStale[i]: page i holds a former consumer's write
    phStale,         \* ghost: phStale[p]: the hint p loaded was such a write
    late,            \* ghost: a walk of a finished mapping moved VCO after its final
    staleMove        \* ghost: VCO moved toward a former consumer's or a foreign handle's value

ringVars  == <<reserveOffset, producerOffset, validated, hdr, committed>>
prodVars  == <<pc, mine, pg, ph, phStale>>
consVars  == <<gen, cst, page, pageStale, rd, cret, cstart, predFinal, delivered>>
queryVars == <<qs, qg, qhint>>
ghostVars == <<lastFinal, late, staleMove>>

vars == <<reserveOffset, producerOffset, validated, hdr, committed,
          pc, mine, pg, ph, phStale, walkers, attached,
          gen, cst, page, pageStale, rd, cret, cstart, predFinal, delivered,
          qs, qg, qhint, lastFinal, late, staleMove>>

Min(a, b) == IF a < b THEN a ELSE b

\* The page mapping g reads and writes.
PageOf(g) == IF Bug = "shared_consumer_page" THEN 1 ELSE g

\* What a walk sees of record o: published and its header not LOCKED.
LooksCommitted(o) == o < producerOffset /\ hdr[Slot(o)] # "Locked"

\* Where a walk from `validated` toward min(hint, producer offset) ends: at
\* the first record that does not look committed, or at that limit
\* (Ring::advance_consumer_offset, one CAS from the value it started at).
WalkEnd(hint) ==
    LET limit == Min(hint, producerOffset) IN
    IF validated >= limit THEN validated
    ELSE CHOOSE e \in validated .. limit :
            /\ \A o \in validated .. (e - 1) : LooksCommitted(o)
            /\ (e = limit \/ ~LooksCommitted(e))

\* The gate's check after the increment (Ring::enter_hint_walk).
GateOpen(g) ==
    IF Bug = "gate_without_generation" THEN attached # 0 ELSE attached = g

\* Mapping g has been retired completely (step d done).
Finalized(g) == g < gen \/ (g = gen /\ cst = "none")

\* A walk of mapping g with hint h moves VCO to e: note whether it landed
\* after g's final, and whether its hint was a stale value.
Landed(g, stale, e) ==
    /\ validated' = e
    /\ late'      = (late \/ (e # validated /\ Finalized(g)))
    /\ staleMove' = (staleMove \/ (e # validated /\ stale))
    /\ UNCHANGED lastFinal

-----------------------------------------------------------------------------
Init ==
    /\ reserveOffset  = 0
    /\ producerOffset = 0
    /\ validated      = 0
    /\ hdr            = [s \in Slots |-> "Zero"]
    /\ committed      = {}
    /\ pc             = [p \in Producers |-> "idle"]
    /\ mine           = [p \in Producers |-> 0]
    /\ pg             = [p \in Producers |-> 0]
    /\ ph             = [p \in Producers |-> 0]
    /\ phStale        = [p \in Producers |-> FALSE]
    /\ walkers        = 0
    /\ attached       = 0
    /\ gen            = 0
    /\ cst            = "none"
    /\ page           = [i \in Pages |-> 0]
    /\ pageStale      = [i \in Pages |-> FALSE]
    /\ rd             = 0
    /\ cret           = 0
    /\ cstart         = 0
    /\ predFinal      = 0
    /\ delivered      = {}
    /\ qs             = "idle"
    /\ qg             = 0
    /\ qhint          = 0
    /\ lastFinal      = 0
    /\ late           = FALSE
    /\ staleMove      = FALSE

\* ---- producers: records ----

\* Ring::reserve: the space check against the validated offset and the CAS
\* of the reserve offset, then the LOCKED header (one step: the slot is not
\* published before Publish, so nobody reads it in between).
ReserveAndLock(p) ==
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + 1 <= validated + Capacity
    /\ reserveOffset' = reserveOffset + 1
    /\ mine' = [mine EXCEPT ![p] = reserveOffset]
    /\ hdr'  = [hdr EXCEPT ![Slot(reserveOffset)] = "Locked"]
    /\ pc'   = [pc EXCEPT ![p] = "locked"]
    /\ UNCHANGED <<producerOffset, validated, committed, pg, ph, phStale, walkers, attached>>
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* Ring::reserve: wait for producer offset = my start, publish my end.
Publish(p) ==
    /\ pc[p] = "locked"
    /\ producerOffset = mine[p]
    /\ producerOffset' = mine[p] + 1
    /\ pc' = [pc EXCEPT ![p] = "published"]
    /\ UNCHANGED <<reserveOffset, validated, hdr, committed, mine, pg, ph, phStale,
                   walkers, attached>>
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* Reservation::submit: the release store of the header.
Submit(p) ==
    /\ pc[p] = "published"
    /\ hdr'       = [hdr EXCEPT ![Slot(mine[p])] = "Submitted"]
    /\ committed' = committed \cup {mine[p]}
    /\ pc'        = [pc EXCEPT ![p] = "idle"]
    /\ mine'      = [mine EXCEPT ![p] = 0]
    /\ UNCHANGED <<reserveOffset, producerOffset, validated, pg, ph, phStale,
                   walkers, attached>>
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* ---- producers: the gated page walk (when the ring looks full) ----

\* The ring looks full: read `attached` (non-zero) and enter the gate with
\* it: walkers += 1.  (One step, to keep the state space small: a retire and
\* a MAP between taking the generation and the increment are checked for the
\* QUERY, whose QueryStart and QueryEnter are apart; it is the same gate.)
WalkEnter(p) ==
    /\ pc[p] = "idle"
    /\ reserveOffset < MaxOffset
    /\ reserveOffset + 1 > validated + Capacity
    /\ attached # 0
    /\ pg'      = [pg EXCEPT ![p] = attached]
    /\ walkers' = walkers + 1
    /\ pc'      = [pc EXCEPT ![p] = "w_entered"]
    /\ UNCHANGED <<mine, ph, phStale, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* The gate's check, a load of `attached` after the increment: still my
\* generation, go on; otherwise leave (walkers -= 1) without a walk.
WalkCheck(p) ==
    /\ pc[p] = "w_entered"
    /\ IF GateOpen(pg[p])
         THEN /\ pc' = [pc EXCEPT ![p] = "w_checked"]
              /\ UNCHANGED <<pg, walkers>>
         ELSE /\ pc'      = [pc EXCEPT ![p] = "idle"]
              /\ pg'      = [pg EXCEPT ![p] = 0]
              /\ walkers' = walkers - 1
    /\ UNCHANGED <<mine, ph, phStale, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* Load the hint: the page of the generation I entered with.
WalkLoad(p) ==
    /\ pc[p] = "w_checked"
    /\ ph'      = [ph EXCEPT ![p] = page[PageOf(pg[p])]]
    /\ phStale' = [phStale EXCEPT ![p] = pageStale[PageOf(pg[p])]]
    /\ pc'      = [pc EXCEPT ![p] = "w_loaded"]
    /\ UNCHANGED <<mine, pg, walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* Walk from the current validated offset toward the hint, CAS it, and exit
\* the gate (walkers -= 1).
WalkCas(p) ==
    /\ pc[p] = "w_loaded"
    /\ Landed(pg[p], phStale[p], WalkEnd(ph[p]))
    /\ walkers' = walkers - 1
    /\ pc'      = [pc EXCEPT ![p] = "idle"]
    /\ pg'      = [pg EXCEPT ![p] = 0]
    /\ ph'      = [ph EXCEPT ![p] = 0]
    /\ phStale' = [phStale EXCEPT ![p] = FALSE]
    /\ UNCHANGED <<mine, attached>>
    /\ UNCHANGED <<reserveOffset, producerOffset, hdr, committed>>
    /\ UNCHANGED consVars
    /\ UNCHANGED queryVars

\* ---- MAP ----

\* Device::map: only while nothing is attached and no retire runs.  A fresh
\* page (shared bug: the one page) set to the validated offset; attach the
\* next generation; the reply, where the consumer starts, is that offset.
\* Ghost: records at or after the start are owed to this consumer again
\* (at-least-once: whatever a crashed predecessor read but did not return).
Map ==
    /\ cst = "none"
    /\ gen < MaxMaps
    /\ gen'       = gen + 1
    /\ attached'  = gen + 1
    /\ cst'       = "mapped"
    /\ page'      = [page EXCEPT ![PageOf(gen + 1)] = validated]
    /\ pageStale' = [pageStale EXCEPT ![PageOf(gen + 1)] = FALSE]
    /\ rd'        = validated
    /\ cret'      = validated
    /\ cstart'    = validated
    /\ predFinal' = lastFinal
    /\ delivered' = {o \in delivered : o < validated}
    /\ UNCHANGED <<walkers>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* ---- the current consumer (honest) ----

\* Consumer::batch_up_to / Records::next: the next record, if submitted.
Read ==
    /\ cst = "mapped"
    /\ rd < producerOffset
    /\ hdr[Slot(rd)] = "Submitted"
    /\ rd'        = rd + 1
    /\ delivered' = delivered \cup {rd}
    /\ UNCHANGED <<gen, cst, page, pageStale, cret, cstart, predFinal>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* Drop for Batch: store the read position into its own page.
Return ==
    /\ cst = "mapped"
    /\ page[PageOf(gen)] # rd
    /\ page'      = [page EXCEPT ![PageOf(gen)] = rd]
    /\ pageStale' = [pageStale EXCEPT ![PageOf(gen)] = FALSE]
    /\ cret'      = rd
    /\ UNCHANGED <<gen, cst, rd, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* Device::query from the handle that holds the mapping: under the device
\* lock take the mapping's generation; the request carries the read
\* position (returning space up to it).
QueryStart ==
    /\ cst = "mapped"
    /\ qs = "idle"
    /\ rd > validated
    /\ qs'    = "started"
    /\ qg'    = gen
    /\ qhint' = rd
    /\ cret'  = rd
    /\ UNCHANGED <<gen, cst, page, pageStale, rd, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED ghostVars

\* Out of the device lock, enter the gate with that generation: walkers += 1.
QueryEnter ==
    /\ qs = "started"
    /\ qs'      = "entered"
    /\ walkers' = walkers + 1
    /\ UNCHANGED <<qg, qhint, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED consVars
    /\ UNCHANGED ghostVars

QueryCheck ==
    /\ qs = "entered"
    /\ IF GateOpen(qg)
         THEN /\ qs' = "checked"
              /\ UNCHANGED <<qg, qhint, walkers>>
         ELSE /\ qs'      = "idle"
              /\ qg'      = 0
              /\ qhint'   = 0
              /\ walkers' = walkers - 1
    /\ UNCHANGED attached
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED consVars
    /\ UNCHANGED ghostVars

QueryWalk ==
    /\ qs = "checked"
    /\ Landed(qg, FALSE, WalkEnd(qhint))
    /\ walkers' = walkers - 1
    /\ qs'      = "idle"
    /\ qg'      = 0
    /\ qhint'   = 0
    /\ UNCHANGED attached
    /\ UNCHANGED <<reserveOffset, producerOffset, hdr, committed>>
    /\ UNCHANGED prodVars
    /\ UNCHANGED consVars

\* ---- the end of a mapping ----

\* Device::unmap, and Device::close of a client that returned its last batch:
\* the client returns what it read, then the retire starts.  (After UNMAP
\* the handle stays open: its QUERYs are ForeignQuery's.)
Unmap ==
    /\ cst = "mapped"
    /\ cst'       = "ret_a"
    /\ page'      = [page EXCEPT ![PageOf(gen)] = rd]
    /\ pageStale' = [pageStale EXCEPT ![PageOf(gen)] = FALSE]
    /\ cret'      = rd
    /\ UNCHANGED <<gen, rd, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* The consumer process dies, or closes its handle with a batch still open:
\* no final return; the retire starts (EvtFileCleanup).
Crash ==
    /\ cst = "mapped"
    /\ cst' = "ret_a"
    /\ UNCHANGED <<gen, page, pageStale, rd, cret, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* a. One last walk from the mapping's page (inside the gate, whose check
\*    cannot fail: nothing else changes `attached` while a retire runs).
RetireWalk ==
    /\ cst = "ret_a"
    /\ Landed(gen, pageStale[PageOf(gen)], WalkEnd(page[PageOf(gen)]))
    /\ cst' = "ret_b"
    /\ UNCHANGED <<gen, page, pageStale, rd, cret, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED <<reserveOffset, producerOffset, hdr, committed>>
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars

\* b. attached := 0.  Bug "map_without_drain": straight on to d.
RetireDetach ==
    /\ cst = "ret_b"
    /\ attached' = 0
    /\ cst' = IF Bug = "map_without_drain" THEN "ret_d" ELSE "ret_c"
    /\ UNCHANGED <<gen, page, pageStale, rd, cret, cstart, predFinal, delivered>>
    /\ UNCHANGED walkers
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* c. Wait until no walker is in the gate.
RetireDrain ==
    /\ cst = "ret_c"
    /\ walkers = 0
    /\ cst' = "ret_d"
    /\ UNCHANGED <<gen, page, pageStale, rd, cret, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* d. final := validated; the mapping is gone (its page may be freed).
RetireFinal ==
    /\ cst = "ret_d"
    /\ lastFinal' = validated
    /\ cst' = "none"
    /\ UNCHANGED <<gen, page, pageStale, rd, cret, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED <<late, staleMove>>

\* ---- the hostile rest ----

\* A former consumer (its retire complete) writes v into its old page.  Only
\* values above the validated offset: a hint at or below it can never move
\* it (it only grows), so the model leaves those writes out.
FormerWrite(g, v) ==
    /\ g \in 1 .. gen
    /\ Finalized(g)
    /\ v > validated
    /\ page[PageOf(g)] # v
    /\ page'      = [page EXCEPT ![PageOf(g)] = v]
    /\ pageStale' = [pageStale EXCEPT ![PageOf(g)] = TRUE]
    /\ UNCHANGED <<gen, cst, rd, cret, cstart, predFinal, delivered>>
    /\ UNCHANGED <<walkers, attached>>
    /\ UNCHANGED ringVars
    /\ UNCHANGED prodVars
    /\ UNCHANGED queryVars
    /\ UNCHANGED ghostVars

\* A QUERY carrying offset v from a handle that is not the mapping (one that
\* never mapped, or a former consumer's after UNMAP).  The design refuses it
\* (STATUS_ACCESS_DENIED) before anything changes.  Bug
\* "query_from_any_handle": it walks toward v in the gate of the current
\* mapping (one step: the handler holds the device lock, no retire can run).
ForeignQuery(v) ==
    IF Bug = "query_from_any_handle"
      THEN /\ attached # 0
           /\ WalkEnd(v) # validated
           /\ Landed(attached, TRUE, WalkEnd(v))
           /\ UNCHANGED <<walkers, attached>>
           /\ UNCHANGED <<reserveOffset, producerOffset, hdr, committed>>
           /\ UNCHANGED prodVars
           /\ UNCHANGED consVars
           /\ UNCHANGED queryVars
      ELSE UNCHANGED vars

-----------------------------------------------------------------------------
\* Each action on its own line, so counterexamples and statistics name it.
Next ==
    \/ \E p \in Producers : ReserveAndLock(p)
    \/ \E p \in Producers : Publish(p)
    \/ \E p \in Producers : Submit(p)
    \/ \E p \in Producers : WalkEnter(p)
    \/ \E p \in Producers : WalkCheck(p)
    \/ \E p \in Producers : WalkLoad(p)
    \/ \E p \in Producers : WalkCas(p)
    \/ Map
    \/ Read
    \/ Return
    \/ QueryStart
    \/ QueryEnter
    \/ QueryCheck
    \/ QueryWalk
    \/ Unmap
    \/ Crash
    \/ RetireWalk
    \/ RetireDetach
    \/ RetireDrain
    \/ RetireFinal
    \/ \E g \in Pages, v \in Offsets : FormerWrite(g, v)
    \/ \E v \in Offsets : ForeignQuery(v)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ reserveOffset  \in Offsets
    /\ producerOffset \in Offsets
    /\ validated      \in Offsets
    /\ hdr            \in [Slots -> HeaderValues]
    /\ committed      \subseteq Records
    /\ pc             \in [Producers -> PcValues]
    /\ mine           \in [Producers -> Records \cup {0}]
    /\ pg             \in [Producers -> Gens]
    /\ ph             \in [Producers -> Offsets]
    /\ phStale        \in [Producers -> BOOLEAN]
    /\ walkers        \in 0 .. (Cardinality(Producers) + 1)
    /\ attached       \in Gens
    /\ gen            \in Gens
    /\ cst            \in CstValues
    /\ page           \in [Pages -> Offsets]
    /\ pageStale      \in [Pages -> BOOLEAN]
    /\ rd             \in Offsets
    /\ cret           \in Offsets
    /\ cstart         \in Offsets
    /\ predFinal      \in Offsets
    /\ delivered      \subseteq Records
    /\ qs             \in QsValues
    /\ qg             \in Gens
    /\ qhint          \in Offsets
    /\ lastFinal      \in Offsets
    /\ late           \in BOOLEAN
    /\ staleMove      \in BOOLEAN

\* The ring's usual: VCO <= producer <= reserve <= VCO + Capacity; VCO has
\* passed only committed records; the latest consumer has read no further
\* than the producer offset and returned no further than it read.
OffsetsConsistent ==
    /\ validated <= producerOffset
    /\ producerOffset <= reserveOffset
    /\ reserveOffset <= validated + Capacity
    /\ \A o \in Records : o < validated => o \in committed
    /\ cstart <= cret
    /\ cret <= rd
    /\ rd <= producerOffset

\* The gate's counter counts exactly the parties inside it; `attached` is
\* the latest mapping's generation from MAP until step b of its retire.
GateConsistent ==
    /\ walkers = Cardinality({p \in Producers : pc[p] \in InGate})
                 + (IF qs \in {"entered", "checked"} THEN 1 ELSE 0)
    /\ attached = (IF cst \in {"mapped", "ret_a", "ret_b"} THEN gen ELSE 0)

\* A new consumer starts exactly at its predecessor's final validated
\* offset (the MAP reply is the validated offset at MAP, so: nothing moves it
\* between a final and the next MAP), and no walk of a finished mapping
\* lands after its final (which would leave the consumer behind VCO).
HandoverExact ==
    /\ cstart = predFinal
    /\ cst = "none" => validated = lastFinal
    /\ ~late

\* VCO never passes what the latest consumer returned, and never moves
\* toward a value a former consumer wrote or a foreign handle sent.
NoStaleInfluence ==
    /\ validated <= cret
    /\ ~staleMove

\* No loss: every record the validated offset has passed was delivered, to
\* the consumer whose start it is at or after or to a later one (Map drops
\* from `delivered` what is owed again).  Every record here is submitted.
NoLoss == \A o \in Records : o < validated => o \in delivered

=============================================================================
