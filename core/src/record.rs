//! The record format, the one of eBPF for Windows and the Linux BPF ringbuf: an 8-byte header
//! `{ len: u32, page_offset: u32 }`, then the payload, the total padded to 8 bytes.
//!
//! `len` bit 31 is LOCKED (Linux: BUSY): the producer still writes the record. Bit 30 is
//! DISCARDED: the consumer skips the record. The low 30 bits are the payload length.
//! `page_offset` is the record's data page, `(start index) / PAGE_SIZE`, kept for format
//! compatibility only: ringmap never derives anything from it.

use crate::layout::{Capacity, MAX_CAPACITY, PAGE_SIZE};
use crate::sync::AtomicU32;

/// `len` bit: the record is reserved and not yet submitted or discarded.
pub const LOCKED: u32 = 1 << 31;
/// `len` bit: the record was discarded; consumers skip it.
pub const DISCARDED: u32 = 1 << 30;
/// `len` bits that hold the payload length.
pub const LEN_MASK: u32 = DISCARDED - 1;
/// The longest payload a record can have: 2^30 - 1 bytes.
pub const MAX_PAYLOAD: u32 = LEN_MASK;
/// Bytes of a record header.
pub const HEADER_SIZE: usize = 8;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;

/// A record header as it lies in the data pages.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RecordHeader {
    /// Payload length and the LOCKED and DISCARDED bits.
    pub(crate) len: AtomicU32,
    /// The record's page in the data, for format compatibility.
    pub(crate) page_offset: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<RecordHeader>() == HEADER_SIZE);

/// The bytes a record with a `payload`-byte payload takes in the ring: header and payload,
/// rounded up to [`RECORD_ALIGN`]. Exact for every `u32`.
#[inline]
pub const fn padded_size(payload: u32) -> u64 {
    (payload as u64 + HEADER_SIZE as u64 + (RECORD_ALIGN as u64 - 1)) & !(RECORD_ALIGN as u64 - 1)
}

/// The largest payload that fits in a ring of `capacity` bytes (a record the size of the ring).
/// Never more than [`MAX_PAYLOAD`]: the largest ring less a header is below it (asserted).
pub const fn max_payload_for(capacity: Capacity) -> u32 {
    (capacity.bytes() - HEADER_SIZE) as u32
}

const _: () = assert!(MAX_CAPACITY - HEADER_SIZE <= MAX_PAYLOAD as usize);

/// The `page_offset` field of a record starting at data index `index`.
#[inline]
pub const fn page_offset_of(index: usize) -> u32 {
    (index / PAGE_SIZE) as u32
}

/// What a header's `len` word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderState {
    /// Reserved; the producer is still writing it.
    Locked,
    /// Submitted: the consumer hands it out.
    Submitted,
    /// Discarded: the consumer skips it.
    Discarded,
}

/// Splits a `len` word into its state and payload length.
#[inline]
pub const fn decode(word: u32) -> (HeaderState, u32) {
    let state = if word & LOCKED != 0 {
        HeaderState::Locked
    } else if word & DISCARDED != 0 {
        HeaderState::Discarded
    } else {
        HeaderState::Submitted
    };
    (state, word & LEN_MASK)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn padding_rounds_header_and_payload_to_eight() {
        assert_eq!(padded_size(0), 8);
        assert_eq!(padded_size(1), 16);
        assert_eq!(padded_size(8), 16);
        assert_eq!(padded_size(9), 24);
        assert_eq!(padded_size(MAX_PAYLOAD), (1 << 30) + 8);
        assert_eq!(padded_size(u32::MAX), (u32::MAX as u64 + 8 + 7) & !7);
    }

    #[test]
    fn bits_do_not_overlap() {
        assert_eq!(LOCKED & DISCARDED, 0);
        assert_eq!(LEN_MASK & (LOCKED | DISCARDED), 0);
        assert_eq!(LOCKED | DISCARDED | LEN_MASK, u32::MAX);
    }

    #[test]
    fn decode_reads_state_then_length() {
        assert_eq!(decode(LOCKED | 5), (HeaderState::Locked, 5));
        assert_eq!(decode(LOCKED | DISCARDED | 5), (HeaderState::Locked, 5));
        assert_eq!(decode(DISCARDED | 7), (HeaderState::Discarded, 7));
        assert_eq!(decode(9), (HeaderState::Submitted, 9));
    }

    #[test]
    fn largest_record_fills_the_ring() {
        let c = Capacity::new(4096).unwrap();
        assert_eq!(padded_size(max_payload_for(c)), 4096);
        assert_eq!(
            max_payload_for(Capacity::new(1 << 30).unwrap()),
            (1 << 30) - 8
        );
    }

    #[test]
    fn page_offset_counts_pages() {
        assert_eq!(page_offset_of(0), 0);
        assert_eq!(page_offset_of(4095), 0);
        assert_eq!(page_offset_of(4096 * 3 + 8), 3);
    }
}
