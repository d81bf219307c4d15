//! The protobuf codec of every `mentorship.v1` service: prost's, with a
//! small first encode buffer.
//!
//! tonic allocates a response's encode buffer when the response starts, 8 KiB
//! by default: a replica holding 10,000 idle WatchSession streams would keep
//! 80 MiB of empty buffers. Our messages are small (an event, a session), and
//! a larger one (an export chunk) grows the buffer as it is written.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// First size of a response's encode buffer.
pub const ENCODE_BUFFER: usize = 1024;
/// tonic's default: a stream yields to the transport past this many bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Used by the generated services (`build.rs`, `codec_path`).
#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}
