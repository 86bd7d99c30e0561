//! Typed views of a streaming call for generated service code: protobuf messages instead of bytes.

use std::marker::PhantomData;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::status::Status;
use super::stream::ServerStream;

/// The client's messages of a client-streaming or bidi call, decoded.
pub struct RequestStream<T> {
    inbound: mpsc::Receiver<Bytes>,
    type_name: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> RequestStream<T> {
    /// The next request; `Ok(None)` once the client has closed its send side. A message that does not decode
    /// ends the call with an error, as a Go handler's `Recv` error would.
    pub async fn recv(&mut self) -> Result<Option<T>, Status> {
        match self.inbound.recv().await {
            Some(body) => T::decode(body).map(Some).map_err(|e| Status::decode_failed(self.type_name, e)),
            None => Ok(None),
        }
    }
}

/// Where a server-streaming or bidi handler sends its replies.
pub struct ResponseSink<T> {
    outbound: mpsc::Sender<Bytes>,
    _type: PhantomData<fn(T)>,
}

impl<T> Clone for ResponseSink<T> {
    fn clone(&self) -> Self {
        ResponseSink { outbound: self.outbound.clone(), _type: PhantomData }
    }
}

impl<T: prost::Message> ResponseSink<T> {
    /// Fails once the call is over (the client left or cancelled): the handler should return then.
    pub async fn send(&self, message: &T) -> Result<(), Status> {
        self.outbound.send(message.encode_to_vec().into()).await.map_err(|_| Status::error("stream closed"))
    }

    /// Resolves when the call is over and nothing more can be sent.
    pub async fn closed(&self) {
        self.outbound.closed().await
    }
}

impl ServerStream {
    /// Splits the call into typed halves; `request_type` names the message in decode errors.
    pub fn into_typed<Req, Resp>(self, request_type: &'static str) -> (RequestStream<Req>, ResponseSink<Resp>) {
        (
            RequestStream { inbound: self.inbound, type_name: request_type, _type: PhantomData },
            ResponseSink { outbound: self.outbound, _type: PhantomData },
        )
    }
}
