//! Build-time generator of dRPC service code, plugged into `prost-build` the way tonic-build plugs in gRPC's.
//!
//! For each protobuf service `Svc` in package `pkg` it writes, next to prost's message types:
//! - `svc_methods`: one `const` per method path (`/pkg.Svc/Method`) and `ALL`;
//! - `trait SvcServer`: one method per RPC taking the session context and the decoded request, shaped by the RPC
//!   (unary, server-stream, client-stream, bidi); no default bodies, so an RPC is never silently unimplemented;
//! - `register_svc(router, service)`: a router entry per method path, decoding requests and encoding replies;
//! - `SvcClient`: a typed client, one method per RPC, over [`crate::client::Client`].
//!
//! ```ignore
//! prost_build::Config::new()
//!     .service_generator(Box::new(agentwire_transport::codegen::DrpcGenerator::new()))
//!     .compile_fds(file_descriptor_set)?;
//! ```

use std::fmt::Write;

use prost_build::{Method, Service, ServiceGenerator};

/// Emits dRPC server traits, routers and typed clients for prost-build.
#[derive(Debug, Default)]
pub struct DrpcGenerator {
    /// Path of the transport crate as the generated code sees it.
    crate_path: String,
}

impl DrpcGenerator {
    pub fn new() -> Self {
        DrpcGenerator { crate_path: "::agentwire_transport".to_owned() }
    }

    /// For code compiled inside a crate that names the transport crate differently.
    pub fn with_crate_path(path: impl Into<String>) -> Self {
        DrpcGenerator { crate_path: path.into() }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

impl Shape {
    fn of(method: &Method) -> Shape {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Shape::Unary,
            (false, true) => Shape::ServerStream,
            (true, false) => Shape::ClientStream,
            (true, true) => Shape::Bidi,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::ServerStream => "server-streaming",
            Shape::ClientStream => "client-streaming",
            Shape::Bidi => "bidirectional streaming",
        }
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn doc(buf: &mut String, indent: &str, lines: &[String]) {
    for line in lines {
        let _ = writeln!(buf, "{indent}///{}", line.trim_end());
    }
}

fn proto_type(name: &str) -> &str {
    name.trim_start_matches('.')
}

impl ServiceGenerator for DrpcGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let t = &self.crate_path;
        let svc = &service.name;
        let svc_snake = snake(&service.proto_name);
        let full = format!("{}.{}", service.package, service.proto_name);
        let path = |m: &Method| format!("/{full}/{}", m.proto_name);
        let konst = |m: &Method| m.name.to_ascii_uppercase();

        // Method paths.
        let _ = writeln!(buf, "/// dRPC method paths of `{full}`.");
        let _ = writeln!(buf, "pub mod {svc_snake}_methods {{");
        for m in &service.methods {
            let _ = writeln!(buf, "    pub const {}: &str = \"{}\";", konst(m), path(m));
        }
        let all: Vec<String> = service.methods.iter().map(konst).collect();
        let _ = writeln!(buf, "    pub const ALL: &[&str] = &[{}];", all.join(", "));
        let _ = writeln!(buf, "}}\n");

        // Server trait.
        doc(buf, "", &service.comments.leading);
        let _ =
            writeln!(buf, "/// Server side of `{full}`: implement it, then [`register_{svc_snake}`] it on a router.");
        let _ = writeln!(buf, "pub trait {svc}Server: Send + Sync + 'static {{");
        let _ = writeln!(buf, "    /// What each call gets from the session that carries it.");
        let _ = writeln!(buf, "    type Context: Clone + Send + Sync + 'static;");
        for m in &service.methods {
            let (input, output) = (&m.input_type, &m.output_type);
            let shape = Shape::of(m);
            let _ = writeln!(buf);
            doc(buf, "    ", &m.comments.leading);
            let _ = writeln!(buf, "    /// `{}` ({}).", path(m), shape.describe());
            let fut = |out: &str| {
                format!("impl ::std::future::Future<Output = ::std::result::Result<{out}, {t}::server::Status>> + Send")
            };
            let sig = match shape {
                Shape::Unary => format!("request: {input}) -> {}", fut(output)),
                Shape::ServerStream => format!(
                    "request: {input}, responses: {t}::server::ResponseSink<{output}>) -> {}",
                    fut("()")
                ),
                Shape::ClientStream => {
                    format!("requests: {t}::server::RequestStream<{input}>) -> {}", fut(output))
                }
                Shape::Bidi => format!(
                    "requests: {t}::server::RequestStream<{input}>, responses: {t}::server::ResponseSink<{output}>) -> {}",
                    fut("()")
                ),
            };
            let _ = writeln!(buf, "    fn {}(&self, ctx: &Self::Context, {sig};", m.name);
        }
        let _ = writeln!(buf, "}}\n");

        // Router registration.
        let _ = writeln!(buf, "/// Registers every method of `{full}` on `router`, served by `service`.");
        let _ = writeln!(
            buf,
            "pub fn register_{svc_snake}<S: {svc}Server>(router: &mut {t}::server::Router<S::Context>, service: ::std::sync::Arc<S>) {{"
        );
        for m in &service.methods {
            let (input, output) = (&m.input_type, &m.output_type);
            let in_name = proto_type(&m.input_proto_type);
            let _ = writeln!(buf, "    {{");
            let _ = writeln!(buf, "        let service = service.clone();");
            let body = match Shape::of(m) {
                Shape::Unary => format!(
                    "router.unary({svc_snake}_methods::{k}, move |ctx, body| {{
            let service = service.clone();
            async move {{
                let request = <{input} as ::prost::Message>::decode(body)
                    .map_err(|e| {t}::server::Status::decode_failed(\"{in_name}\", e))?;
                let reply = service.{name}(&ctx, request).await?;
                Ok(::prost::Message::encode_to_vec(&reply).into())
            }}
        }});",
                    k = konst(m),
                    name = m.name
                ),
                Shape::ServerStream => format!(
                    "router.streaming({svc_snake}_methods::{k}, move |ctx, stream| {{
            let service = service.clone();
            async move {{
                let (mut requests, responses) = stream.into_typed::<{input}, {output}>(\"{in_name}\");
                let request = requests.recv().await?.ok_or_else(|| {t}::server::Status::error(\"EOF\"))?;
                service.{name}(&ctx, request, responses).await
            }}
        }});",
                    k = konst(m),
                    name = m.name
                ),
                Shape::ClientStream => format!(
                    "router.streaming({svc_snake}_methods::{k}, move |ctx, stream| {{
            let service = service.clone();
            async move {{
                let (requests, responses) = stream.into_typed::<{input}, {output}>(\"{in_name}\");
                let reply = service.{name}(&ctx, requests).await?;
                responses.send(&reply).await
            }}
        }});",
                    k = konst(m),
                    name = m.name
                ),
                Shape::Bidi => format!(
                    "router.streaming({svc_snake}_methods::{k}, move |ctx, stream| {{
            let service = service.clone();
            async move {{
                let (requests, responses) = stream.into_typed::<{input}, {output}>(\"{in_name}\");
                service.{name}(&ctx, requests, responses).await
            }}
        }});",
                    k = konst(m),
                    name = m.name
                ),
            };
            let _ = writeln!(buf, "        {body}");
            let _ = writeln!(buf, "    }}");
        }
        let _ = writeln!(buf, "}}\n");

        // Typed client.
        let _ = writeln!(buf, "/// Typed client of `{full}`: every call opens its own yamux stream.");
        let _ = writeln!(buf, "#[derive(Clone, Debug)]");
        let _ = writeln!(buf, "pub struct {svc}Client {{\n    inner: {t}::client::Client,\n}}\n");
        let _ = writeln!(buf, "impl {svc}Client {{");
        let _ =
            writeln!(buf, "    pub fn new(inner: {t}::client::Client) -> Self {{\n        Self {{ inner }}\n    }}");
        for m in &service.methods {
            let (input, output) = (&m.input_type, &m.output_type);
            let out_name = proto_type(&m.output_proto_type);
            let k = konst(m);
            let _ = writeln!(buf);
            let _ = writeln!(buf, "    /// `{}` ({}).", path(m), Shape::of(m).describe());
            let stream_ty = format!("{t}::client::TypedClientStream<{input}, {output}>");
            let err = format!("{t}::client::CallError");
            match Shape::of(m) {
                Shape::Unary => {
                    let _ = writeln!(
                        buf,
                        "    pub async fn {name}(&self, request: &{input}) -> ::std::result::Result<{output}, {err}> {{
        let reply = self.inner.unary({svc_snake}_methods::{k}, &::prost::Message::encode_to_vec(request)).await?;
        <{output} as ::prost::Message>::decode(reply)
            .map_err(|source| {err}::Decode {{ type_name: \"{out_name}\", source }})
    }}",
                        name = m.name
                    );
                }
                Shape::ServerStream => {
                    let _ = writeln!(
                        buf,
                        "    pub async fn {name}(&self, request: &{input}) -> ::std::result::Result<{stream_ty}, {err}> {{
        let stream = {t}::client::TypedClientStream::new(self.inner.open_stream({svc_snake}_methods::{k}).await?, \"{out_name}\");
        stream.send(request).await?;
        stream.close_send().await?;
        Ok(stream)
    }}",
                        name = m.name
                    );
                }
                Shape::ClientStream | Shape::Bidi => {
                    let _ = writeln!(
                        buf,
                        "    pub async fn {name}(&self) -> ::std::result::Result<{stream_ty}, {err}> {{
        Ok({t}::client::TypedClientStream::new(self.inner.open_stream({svc_snake}_methods::{k}).await?, \"{out_name}\"))
    }}",
                        name = m.name
                    );
                }
            }
        }
        let _ = writeln!(buf, "}}");
    }
}

#[cfg(test)]
mod tests {
    use super::snake;

    #[test]
    fn snake_case_of_rpc_names() {
        assert_eq!(snake("GetManifest"), "get_manifest");
        assert_eq!(snake("Agent"), "agent");
    }
}
