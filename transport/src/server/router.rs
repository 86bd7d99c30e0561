//! Method path → handler. Each session passes its own context (`C`) to every call it serves.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::status::Status;
use super::stream::ServerStream;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

type UnaryFn<C> = dyn Fn(C, Bytes) -> BoxFuture<Result<Bytes, Status>> + Send + Sync;
type StreamingFn<C> = dyn Fn(C, ServerStream) -> BoxFuture<Result<(), Status>> + Send + Sync;

/// How a method is served. Unary calls get the request bytes and answer one message; every streaming shape
/// (server, client, bidi) gets the [`ServerStream`], and generated code adapts it to the shape.
pub enum Method<C> {
    Unary(Arc<UnaryFn<C>>),
    Streaming(Arc<StreamingFn<C>>),
}

impl<C> Clone for Method<C> {
    fn clone(&self) -> Self {
        match self {
            Method::Unary(f) => Method::Unary(f.clone()),
            Method::Streaming(f) => Method::Streaming(f.clone()),
        }
    }
}

pub struct Router<C> {
    methods: HashMap<String, Method<C>>,
}

impl<C> Default for Router<C> {
    fn default() -> Self {
        Router { methods: HashMap::new() }
    }
}

impl<C: Send + 'static> Router<C> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn unary<F, Fut>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Fn(C, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
    {
        let f: Arc<UnaryFn<C>> = Arc::new(move |ctx, body| Box::pin(handler(ctx, body)));
        self.methods.insert(path.to_owned(), Method::Unary(f));
        self
    }

    pub fn streaming<F, Fut>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Fn(C, ServerStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f: Arc<StreamingFn<C>> = Arc::new(move |ctx, stream| Box::pin(handler(ctx, stream)));
        self.methods.insert(path.to_owned(), Method::Streaming(f));
        self
    }

    pub fn get(&self, path: &str) -> Option<&Method<C>> {
        self.methods.get(path)
    }

    /// The registered spelling of `path`, if it is registered: a label that outlives the peer's string.
    pub fn path(&self, path: &str) -> Option<&str> {
        self.methods.get_key_value(path).map(|(registered, _)| registered.as_str())
    }

    /// Every registered method path, sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.methods.keys().map(String::as_str).collect();
        paths.sort_unstable();
        paths
    }
}
