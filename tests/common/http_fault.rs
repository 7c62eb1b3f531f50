//! An HTTP/1.1 proxy for fault tests: one request per connection (it asks both sides for
//! `Connection: close`), and requests whose path starts with a chosen prefix answered with an
//! injected fault instead of being forwarded, while a fault is set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a matching request gets while the fault is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// This status, with a registry-style JSON error body.
    Status(u16),
    /// Forwarded only after this delay.
    Slow(Duration),
}

/// A proxy from a free loopback port to `target`.
pub struct HttpFaultProxy {
    pub port: u16,
    fault: Arc<Mutex<Option<Fault>>>,
    faulted: Arc<AtomicUsize>,
}

impl HttpFaultProxy {
    /// Forwards every request to `target`; requests whose path starts with `prefix` get `fault`
    /// until [`HttpFaultProxy::heal`].
    pub async fn start(target: &'static str, prefix: &'static str, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fault, faulted) = (Arc::new(Mutex::new(Some(fault))), Arc::new(AtomicUsize::new(0)));
        let (accept_fault, accept_faulted) = (fault.clone(), faulted.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (fault, faulted) = (accept_fault.clone(), accept_faulted.clone());
                tokio::spawn(async move {
                    let _ = serve(inbound, target, prefix, &fault, &faulted).await;
                });
            }
        });
        Self { port, fault, faulted }
    }

    /// Matching requests answered with a fault (or delayed) so far.
    pub fn faulted(&self) -> usize {
        self.faulted.load(Ordering::Acquire)
    }

    /// Forwards every request from now on.
    pub fn heal(&self) {
        *self.fault.lock().unwrap() = None;
    }
}

async fn serve(
    mut inbound: TcpStream,
    target: &str,
    prefix: &str,
    fault: &Mutex<Option<Fault>>,
    faulted: &AtomicUsize,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        let read = inbound.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
        if let Some(at) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let content_length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(0);
    while request.len() < head_end + content_length {
        let read = inbound.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let active = if path.starts_with(prefix) { *fault.lock().unwrap() } else { None };
    match active {
        Some(Fault::Status(status)) => {
            faulted.fetch_add(1, Ordering::AcqRel);
            let body = format!(r#"{{"error_code":{status}01,"message":"injected fault"}}"#);
            let response = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return inbound.write_all(response.as_bytes()).await;
        }
        Some(Fault::Slow(delay)) => {
            faulted.fetch_add(1, Ordering::AcqRel);
            tokio::time::sleep(delay).await;
        }
        None => {}
    }
    let mut forwarded: String = head
        .split("\r\n")
        .filter(|line| !line.is_empty() && !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut outbound = TcpStream::connect(target).await?;
    outbound.write_all(forwarded.as_bytes()).await?;
    outbound.write_all(&request[head_end..]).await?;
    let mut response = Vec::new();
    outbound.read_to_end(&mut response).await?;
    inbound.write_all(&response).await
}
