//! The protobuf codec of every `mentorship.v1` service: prost's, with a
//! small first encode buffer, and a request that cannot be decoded (nested
//! past prost's recursion limit, truncated, a wrong wire type) answered
//! INVALID_ARGUMENT with a field violation: it is the caller's input, not
//! the server's failure (prost's decoder says INTERNAL).
//!
//! tonic allocates a response's encode buffer when the response starts, 8 KiB
//! by default: a replica holding 10,000 idle WatchSession streams would keep
//! 80 MiB of empty buffers. Our messages are small (an event, a session), and
//! a larger one (an export chunk) grows the buffer as it is written.

use std::marker::PhantomData;

use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::domain::Error;

/// First size of a response's encode buffer.
pub(crate) const ENCODE_BUFFER: usize = 1024;
/// tonic's default: a stream yields to the transport past this many bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Used by the generated services (`build.rs`, `codec_path`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

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
    type Decoder = InputDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        InputDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// prost's decoder, whose failures are the caller's bad input.
#[derive(Debug)]
pub(crate) struct InputDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for InputDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            let why = status
                .message()
                .trim_start_matches("failed to decode Protobuf message: ");
            let hint = if why.contains("recursion limit") {
                "; messages nest at most 100 levels deep"
            } else {
                ""
            };
            let message = std::any::type_name::<U>().rsplit("::").next().unwrap_or("request");
            Error::invalid("request", format!("is not a valid {message} message ({why}){hint}")).into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
