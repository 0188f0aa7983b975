//! Cutting a connection's byte stream into messages (see [`protocol`](crate::protocol)),
//! whatever sizes the bytes arrive in.
//!
//! A request's input is buffered as it arrives, never sized from its header first: a client
//! announcing a 1 GiB WRITE and sending 10 bytes costs 10 bytes (the caller bounds the total
//! with [`Framer::push`]'s `limit`). Input longer than any request takes, a non-zero
//! `reserved`, an unknown code: read and dropped, then refused.

use ringmap_core::abi::{Request, Status};

use crate::protocol::{CODE_CANCEL, RequestHeader};

/// A whole message.
#[derive(Debug)]
pub enum Frame<'a> {
    /// A request to hand to the device.
    Request {
        header: RequestHeader,
        request: Request,
        input: &'a [u8],
    },
    /// A request refused before the device saw it: reply `status` to `id`.
    Refused { id: u64, status: Status },
    /// Cancel the pending QUERY `id` (no reply of its own).
    Cancel { id: u64 },
}

enum State {
    Header,
    Body {
        header: RequestHeader,
        request: Request,
    },
    Discard {
        left: u64,
        then: Discarded,
    },
}

#[derive(Clone, Copy)]
enum Discarded {
    Refuse { id: u64, status: Status },
    Cancel { id: u64 },
    Nothing,
}

/// A connection's framing state.
pub struct Framer {
    header: [u8; RequestHeader::SIZE],
    header_got: usize,
    body: Vec<u8>,
    state: State,
    max_input: u64,
}

impl Framer {
    /// A framer for a device whose longest request input is `max_input` bytes.
    pub fn new(max_input: u64) -> Framer {
        Framer {
            header: [0; RequestHeader::SIZE],
            header_got: 0,
            body: Vec::new(),
            state: State::Header,
            max_input,
        }
    }

    /// The bytes of memory this framer holds for a request's input (its capacity).
    pub fn buffered(&self) -> usize {
        self.body.capacity()
    }

    /// The input bytes still to come of the request being buffered, if one is.
    pub fn body_remaining(&self) -> Option<usize> {
        match self.state {
            State::Body { header, .. } => Some(header.input_len as usize - self.body.len()),
            _ => None,
        }
    }

    /// The bytes of the buffer so far.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Whether a message has begun and not ended.
    pub fn mid_message(&self) -> bool {
        self.header_got > 0 || !matches!(self.state, State::Header)
    }

    /// Lets go of a large input buffer (after a large request, so an idle connection holds
    /// little).
    pub fn shrink(&mut self, keep: usize) {
        if self.body.capacity() > keep && self.body.is_empty() {
            self.body = Vec::new();
        }
    }

    /// Takes `bytes` and calls `on_frame` for each message they complete. The input buffer
    /// never grows past `limit` bytes of capacity unless the bytes themselves need it (the
    /// caller gives no more bytes than its limit allows).
    pub fn push(&mut self, mut bytes: &[u8], limit: usize, mut on_frame: impl FnMut(Frame<'_>)) {
        while !bytes.is_empty() {
            match self.state {
                State::Header => {
                    let take = (RequestHeader::SIZE - self.header_got).min(bytes.len());
                    self.header[self.header_got..self.header_got + take]
                        .copy_from_slice(&bytes[..take]);
                    self.header_got += take;
                    bytes = &bytes[take..];
                    if self.header_got == RequestHeader::SIZE {
                        self.header_got = 0;
                        let header = RequestHeader::from_bytes(&self.header);
                        self.begin(header, &mut on_frame);
                    }
                }
                State::Discard { left, then } => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = left - take;
                    self.state = State::Discard { left, then };
                    if left == 0 {
                        self.end_discard(then, &mut on_frame);
                    }
                }
                State::Body { header, request } => {
                    let want = header.input_len as usize;
                    let take = (want - self.body.len()).min(bytes.len());
                    let needed = self.body.len() + take;
                    if self.body.capacity() < needed {
                        // At most double what is there, never past the input's length nor
                        // (unless the bytes need it) the caller's limit.
                        let len = self.body.len();
                        let cap = needed
                            .max((2 * len).min(limit).min(want))
                            .max(4096.min(want));
                        self.body.reserve_exact(cap - len);
                    }
                    self.body.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.body.len() == want {
                        self.state = State::Header;
                        on_frame(Frame::Request {
                            header,
                            request,
                            input: &self.body,
                        });
                        self.body.clear();
                    }
                }
            }
        }
    }

    fn begin(&mut self, header: RequestHeader, on_frame: &mut impl FnMut(Frame<'_>)) {
        let then = if header.code == CODE_CANCEL {
            if header.reserved != 0 {
                Discarded::Nothing
            } else {
                Discarded::Cancel { id: header.id }
            }
        } else if header.reserved != 0 || u64::from(header.input_len) > self.max_input {
            Discarded::Refuse {
                id: header.id,
                status: Status::InvalidParameter,
            }
        } else if let Some(request) = Request::from_code(header.code) {
            self.state = State::Body { header, request };
            if header.input_len == 0 {
                self.state = State::Header;
                on_frame(Frame::Request {
                    header,
                    request,
                    input: &[],
                });
            }
            return;
        } else {
            Discarded::Refuse {
                id: header.id,
                status: Status::InvalidDeviceRequest,
            }
        };
        self.state = State::Discard {
            left: header.input_len.into(),
            then,
        };
        if header.input_len == 0 {
            self.end_discard(then, on_frame);
        }
    }

    fn end_discard(&mut self, then: Discarded, on_frame: &mut impl FnMut(Frame<'_>)) {
        self.state = State::Header;
        match then {
            Discarded::Refuse { id, status } => on_frame(Frame::Refused { id, status }),
            Discarded::Cancel { id } => on_frame(Frame::Cancel { id }),
            Discarded::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut Framer, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        framer.push(bytes, usize::MAX, |frame| out.push(format!("{frame:?}")));
        out
    }

    fn header(code: u32, input_len: u32, id: u64, reserved: u32) -> [u8; RequestHeader::SIZE] {
        RequestHeader {
            code,
            input_len,
            id,
            output_len: 64,
            reserved,
        }
        .to_bytes()
    }

    #[test]
    fn byte_by_byte_is_the_same_as_at_once() {
        let mut stream = header(Request::Write as u32, 3, 7, 0).to_vec();
        stream.extend_from_slice(b"abc");
        stream.extend_from_slice(&header(CODE_CANCEL, 0, 9, 0));
        stream.extend_from_slice(&header(0x77, 2, 11, 0));
        stream.extend_from_slice(b"zz");
        let mut whole = Framer::new(100);
        let at_once = frames(&mut whole, &stream);
        let mut split = Framer::new(100);
        let mut one_by_one = Vec::new();
        for byte in &stream {
            one_by_one.extend(frames(&mut split, std::slice::from_ref(byte)));
        }
        assert_eq!(at_once, one_by_one);
        assert_eq!(at_once.len(), 3);
        assert!(at_once[0].contains("input: [97, 98, 99]"));
        assert!(at_once[1].contains("Cancel { id: 9 }"));
        assert!(at_once[2].contains("InvalidDeviceRequest"));
    }

    #[test]
    fn reserved_and_oversized_inputs_are_refused_after_their_bytes() {
        let mut framer = Framer::new(4);
        let mut stream = header(Request::Write as u32, 2, 1, 0xFFFF_FFFF).to_vec();
        stream.extend_from_slice(b"xx");
        stream.extend_from_slice(&header(Request::Write as u32, 5, 2, 0));
        stream.extend_from_slice(b"yyyyy");
        let got = frames(&mut framer, &stream);
        assert_eq!(got.len(), 2);
        assert!(got[0].contains("id: 1") && got[0].contains("InvalidParameter"));
        assert!(got[1].contains("id: 2") && got[1].contains("InvalidParameter"));
        assert!(!framer.mid_message());
    }

    #[test]
    fn the_buffer_grows_with_the_bytes_not_the_header() {
        let mut framer = Framer::new(1 << 30);
        let mut stream = header(Request::Write as u32, 1 << 30, 1, 0).to_vec();
        stream.extend_from_slice(&[0; 10]);
        assert!(frames(&mut framer, &stream).is_empty());
        assert!(framer.buffered() <= 4096, "{}", framer.buffered());
        assert_eq!(framer.body_remaining(), Some((1 << 30) - 10));
    }
}
