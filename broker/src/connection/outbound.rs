//! The write queue of one connection: everything encoded for the client and not yet written.
//!
//! Small packets (acks, headers, small payloads) are appended to one growing buffer, so a burst of
//! packets leaves in one write. Payloads of [`ZERO_COPY_MIN`] bytes or more are queued as shared
//! `Bytes` chunks instead of being copied: the same payload fanned out to many subscribers is then
//! written from one allocation. One vectored write sends the buffer and the chunks together.

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Payloads at least this large are queued by reference rather than copied.
pub const ZERO_COPY_MIN: usize = 2048;

/// Most slices handed to one vectored write.
const MAX_SLICES: usize = 32;

/// Pending output of one connection. See the module documentation.
#[derive(Debug, Default)]
pub struct WriteQueue {
    /// Frozen segments, in order, all before `tail`.
    chunks: VecDeque<Bytes>,
    chunks_len: usize,
    /// Where small writes coalesce.
    tail: BytesMut,
}

impl WriteQueue {
    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.chunks_len + self.tail.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer to encode small packets into.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Appends a payload: copied if small, queued by reference if large.
    pub fn put_payload(&mut self, payload: &Bytes) {
        if payload.len() < ZERO_COPY_MIN {
            self.tail.extend_from_slice(payload);
            return;
        }
        if !self.tail.is_empty() {
            let head = self.tail.split().freeze();
            self.chunks_len += head.len();
            self.chunks.push_back(head);
        }
        self.chunks_len += payload.len();
        self.chunks.push_back(payload.clone());
    }

    /// Writes as much as one vectored write takes. Returns the bytes written.
    ///
    /// Cancel-safe: if the future is dropped before completing, nothing was written. The slices
    /// are built on the stack inside `poll`, so the future itself stays a few bytes (it lives in
    /// every connection task).
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<usize> {
        let n = std::future::poll_fn(|cx| {
            let mut slices: SmallVec<[IoSlice<'_>; MAX_SLICES]> = self
                .chunks
                .iter()
                .take(MAX_SLICES - 1)
                .map(|c| IoSlice::new(c))
                .collect();
            if slices.len() == self.chunks.len() && !self.tail.is_empty() {
                slices.push(IoSlice::new(&self.tail));
            }
            Pin::new(&mut *w).poll_write_vectored(cx, &slices)
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.advance(n);
        Ok(n)
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                self.chunks_len -= n;
                return;
            }
            n -= front.len();
            self.chunks_len -= front.len();
            self.chunks.pop_front();
        }
        self.tail.advance(n);
        if self.tail.is_empty() {
            // Everything is written: release the buffer, so an idle connection holds none (a
            // burst allocates it again once, which costs far less than its write syscall).
            self.tail = BytesMut::new();
        }
    }

    /// Writes everything, or fails; adds each write to `written` (the bytes-sent counter), so
    /// a write cut short by a timeout is still counted.
    pub async fn flush_all<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        written: &prometheus::IntCounter,
    ) -> io::Result<()> {
        while !self.is_empty() {
            let n = self.write_to(w).await?;
            written.inc_by(n as u64);
        }
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that accepts at most `limit` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn order_is_kept_across_partial_writes() {
        let big = Bytes::from(vec![b'B'; ZERO_COPY_MIN + 10]);
        let mut q = WriteQueue::default();
        let mut want = Vec::new();
        for i in 0..50u8 {
            q.buf().put_slice(&[i, i]);
            want.extend_from_slice(&[i, i]);
            if i % 7 == 0 {
                q.put_payload(&big);
                want.extend_from_slice(&big);
            } else {
                q.put_payload(&Bytes::from_static(b"small"));
                want.extend_from_slice(b"small");
            }
        }
        assert_eq!(q.len(), want.len());
        let mut w = Trickle {
            out: Vec::new(),
            limit: 777,
        };
        let written = prometheus::IntCounter::new("w", "w").unwrap();
        q.flush_all(&mut w, &written).await.unwrap();
        assert!(q.is_empty());
        assert_eq!(w.out, want);
        assert_eq!(written.get(), want.len() as u64);
    }

    #[tokio::test]
    async fn large_payload_is_not_copied() {
        let big = Bytes::from(vec![1u8; ZERO_COPY_MIN]);
        let mut q = WriteQueue::default();
        q.buf().put_u8(0x30);
        q.put_payload(&big);
        assert_eq!(q.chunks.len(), 2);
        assert_eq!(q.chunks[1].as_ptr(), big.as_ptr());
    }
}
