//! A tiny HTTP/1.1 server on 127.0.0.1 that can be stopped and started again on the same port.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

/// A request with its body read.
pub struct Request {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub type Response = http::Response<Full<Bytes>>;
pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// Builds a response with a status and body.
pub fn response(status: u16, body: impl Into<Bytes>) -> Response {
    http::Response::builder()
        .status(status)
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// Holds responses until released: while closed, [`Gate::pass`] waits (counted in
/// [`Gate::held`]) until [`Gate::open`]. A test closes the gate, waits until a request is held
/// (the client is then provably inside that request) and acts, e.g. SIGKILLs the client.
#[derive(Default)]
pub struct Gate {
    closed: std::sync::atomic::AtomicBool,
    held: AtomicUsize,
    opened: tokio::sync::Notify,
}

impl Gate {
    /// Hold every request passing from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Let held and later requests through.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Requests held right now (a request whose client went away is no longer counted).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits while the gate is closed.
    pub async fn pass(&self) {
        struct Held<'a>(&'a AtomicUsize);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if !self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.held);
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            // Registered before the check: an open() in between is not missed.
            opened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// An HTTP server bound to `127.0.0.1:port`.
pub struct HttpServer {
    addr: SocketAddr,
    handler: Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
    running: Mutex<Option<CancellationToken>>,
    requests: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Binds 127.0.0.1:0 and serves `handler` over plain HTTP.
    pub async fn start(handler: Handler) -> anyhow::Result<Self> {
        Self::start_with(handler, None).await
    }

    /// Binds 127.0.0.1:0 and serves `handler` over HTTPS with `tls`.
    pub async fn start_tls(
        handler: Handler,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        Self::start_with(handler, Some(tls)).await
    }

    async fn start_with(
        handler: Handler,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let mut server = Self {
            addr: "127.0.0.1:0".parse().expect("valid address"),
            handler,
            tls,
            running: Mutex::new(None),
            requests: Arc::new(AtomicUsize::new(0)),
        };
        server.addr = server.bind_and_serve(server.addr)?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// How many requests were received since the start.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().expect("lock").is_some()
    }

    /// Stops accepting and closes every open connection. The port is released.
    pub fn stop(&self) {
        if let Some(token) = self.running.lock().expect("lock").take() {
            token.cancel();
        }
    }

    /// Starts again on the same port (after [`HttpServer::stop`]).
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop();
        // The listener task drops its socket on cancellation; retry briefly until the port
        // is free again.
        let mut last = None;
        for _ in 0..100 {
            match self.bind_and_serve(self.addr) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(last.expect("tried at least once"))
    }

    fn bind_and_serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("binding {addr}"))?;
        let listener = socket.listen(128)?;
        let bound = listener.local_addr()?;
        let token = CancellationToken::new();
        *self.running.lock().expect("lock") = Some(token.clone());
        let handler = self.handler.clone();
        let requests = self.requests.clone();
        let acceptor = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let requests = requests.clone();
                let token = token.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_connection(stream, handler, requests, token).await,
                        Some(acceptor) => match acceptor.accept(stream).into_fallible().await {
                            Ok(tls) => serve_connection(tls, handler, requests, token).await,
                            Err((_, tcp)) => linger(tcp).await,
                        },
                    }
                });
            }
        });
        Ok(bound)
    }
}

/// Closes a connection whose TLS handshake failed as real servers do (nginx's lingering
/// close): the alert already sent, then FIN, then what the client still sends is read and
/// dropped until it closes too (at most 2 s). Closed at once with the client's data unread,
/// the kernel would send a reset, and the client might lose the alert before reading it ("not
/// connected" instead of "certificate required").
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn serve_connection<S>(
    stream: S,
    handler: Handler,
    requests: Arc<AtomicUsize>,
    token: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let handler = handler.clone();
        let requests = requests.clone();
        async move {
            requests.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let request = Request {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            Ok::<_, std::convert::Infallible>(handler(request).await)
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = token.cancelled() => {}
        _ = conn => {}
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks HTTP basic auth against `user`/`password`.
pub fn basic_auth_ok(headers: &http::HeaderMap, user: &str, password: &str) -> bool {
    use base64::Engine;
    let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{user}:{password}").as_bytes()
}

/// A 401 asking for basic auth.
pub fn unauthorized() -> Response {
    http::Response::builder()
        .status(401)
        .header(http::header::WWW_AUTHENTICATE, "Basic realm=\"testkit\"")
        .body(Full::new(Bytes::from_static(b"authentication required\n")))
        .expect("valid response")
}
