//! Guest stdout/stderr, turned into `tracing` events tagged with the plugin
//! name, one event per line: lines longer than `--max-message-size` are
//! split, control characters escaped, and all of it counts against the
//! pipeline's `--max-log-rate`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::output;
use super::rules::OutputRules;

/// Which guest stream a [`LogStream`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioKind {
    /// stdout: logged at info.
    Stdout,
    /// stderr: logged at warn.
    Stderr,
}

/// A guest output stream that logs complete lines.
#[derive(Debug, Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    kind: StdioKind,
    rules: Arc<OutputRules>,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    /// A stream whose lines are logged as coming from `plugin`, within `rules`.
    pub fn new(plugin: Arc<str>, kind: StdioKind, rules: Arc<OutputRules>) -> Self {
        Self {
            plugin,
            kind,
            rules,
            pending: Arc::default(),
        }
    }

    /// Lines longer than this are split, so a guest cannot grow host memory
    /// by never writing a newline.
    fn max_line(&self) -> usize {
        self.rules.max_message_size.max(1)
    }

    fn write_bytes(&self, mut bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&bytes[..pos]);
            self.emit_line(&pending);
            pending.clear();
            bytes = &bytes[pos + 1..];
        }
        pending.extend_from_slice(bytes);
        while pending.len() >= self.max_line() {
            let rest = pending.split_off(self.max_line());
            self.emit_line(&pending);
            *pending = rest;
        }
    }

    fn emit_line(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return;
        }
        let enabled = match self.kind {
            StdioKind::Stdout => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            StdioKind::Stderr => tracing::enabled!(target: "plugin", tracing::Level::WARN),
        };
        if !enabled {
            return;
        }
        let (plugin, max) = (&*self.plugin, self.rules.max_message_size);
        self.rules.gate.log(plugin, || {
            let line = output::for_log(line, max);
            match self.kind {
                StdioKind::Stdout => {
                    tracing::info!(target: "plugin", plugin = %plugin, stream = "stdout", "{line}")
                }
                StdioKind::Stderr => {
                    tracing::warn!(target: "plugin", plugin = %plugin, stream = "stderr", "{line}")
                }
            }
        });
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The last clone flushes a final line without newline.
        if Arc::strong_count(&self.pending) == 1 {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !pending.is_empty() {
                self.emit_line(&pending);
            }
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(self.max_line())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
