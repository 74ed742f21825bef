//! Writing frames to an async byte stream: the one vectored frame writer
//! that the broker's connection writer and the client connection share.
//!
//! A frame goes out as its length prefix followed by its chunks, in
//! `writev` rounds, without copying the chunks into one buffer (a fetch
//! response's batches go from the segment map to the socket as they are).
//! Needs only `tokio::io` (the `io` feature), not sockets: any
//! [`AsyncWrite`] works, so tests can write into memory.

use std::io::{self, IoSlice};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::frame::length_prefix;

/// Writes one frame given as chunks: the length prefix of their total
/// size, then the chunks, with vectored writes.
///
/// # Errors
/// The writer's I/O error, or [`io::ErrorKind::WriteZero`] when it accepts
/// no more bytes before the frame is complete.
pub async fn write_frame<W>(w: &mut W, chunks: &[Bytes]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let len: usize = chunks.iter().map(Bytes::len).sum();
    let prefix = length_prefix(len);
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunks.len() + 1);
    slices.push(IoSlice::new(&prefix));
    slices.extend(chunks.iter().map(|c| IoSlice::new(c)));
    write_all_vectored(w, &mut slices).await
}

/// `write_all` over several buffers, one `writev` per round.
///
/// # Errors
/// The writer's I/O error, or [`io::ErrorKind::WriteZero`] when it accepts
/// no more bytes before every buffer is written.
pub async fn write_all_vectored<W>(w: &mut W, slices: &mut [IoSlice<'_>]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut slices = slices;
    // Skip empty leading buffers so a frame of empty chunks ends cleanly.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = w.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A writer that takes at most `step` bytes per call, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.step;
            for b in bufs {
                let n = b.len().min(left);
                self.out.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn a_frame_is_its_length_prefix_then_its_chunks_however_the_writer_splits_them() {
        let chunks = [
            Bytes::from_static(b"hello"),
            Bytes::new(),
            Bytes::from_static(b", "),
            Bytes::from_static(b"world"),
        ];
        for step in [1, 2, 3, 7, 64] {
            let mut w = Trickle { out: Vec::new(), step };
            block_on(write_frame(&mut w, &chunks)).expect("write");
            assert_eq!(w.out, b"\0\0\0\x0chello, world", "step {step}");
        }
    }

    #[test]
    fn an_empty_frame_is_only_its_prefix() {
        let mut w = Trickle { out: Vec::new(), step: 3 };
        block_on(write_frame(&mut w, &[Bytes::new()])).expect("write");
        assert_eq!(w.out, b"\0\0\0\0");
    }

    #[test]
    fn a_writer_that_takes_nothing_fails_with_write_zero() {
        let mut w = Trickle { out: Vec::new(), step: 0 };
        let err = block_on(write_frame(&mut w, &[Bytes::from_static(b"x")])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
