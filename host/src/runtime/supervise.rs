//! Supervision: every task and worker thread of a run is started here, and
//! every end is observed. An end before shutdown — a clean return or a
//! panic — is reported once, with the task's name and why, so the run can
//! drain and exit non-zero instead of limping on without, say, a committer.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

/// How a task or thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    /// Its name (`committer`, `worker-3`, …).
    pub task: String,
    /// `returned`, `panicked: …` or `aborted`.
    pub how: String,
}

/// A task started by the [`Supervisor`].
#[derive(Debug)]
pub struct Task {
    done: watch::Receiver<bool>,
    abort: AbortHandle,
}

impl Task {
    /// Waits for the task to end.
    pub async fn finished(&mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }

    /// Waits at most `limit` for the task to end, leaving it running
    /// otherwise. `false` if it is still running.
    pub async fn finish_within_quietly(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.finished()).await.is_ok()
    }

    /// Waits at most `limit` for the task to end; aborts it otherwise.
    /// `false` if it had to be aborted.
    pub async fn finish_within(&mut self, limit: Duration) -> bool {
        if tokio::time::timeout(limit, self.finished()).await.is_ok() {
            return true;
        }
        self.abort.abort();
        false
    }
}

/// Starts the tasks and threads of one pipeline and reports how each ended.
#[derive(Debug)]
pub struct Supervisor {
    pipeline: String,
    /// Entered by every task and thread, so their log lines name the pipeline.
    span: Span,
    ends_tx: mpsc::UnboundedSender<TaskEnd>,
    ends: mpsc::UnboundedReceiver<TaskEnd>,
    tracker: TaskTracker,
}

impl Supervisor {
    /// A supervisor for the tasks of `pipeline`, logging inside `span`.
    pub fn new(pipeline: String, span: Span) -> Self {
        let (ends_tx, ends) = mpsc::unbounded_channel();
        Self {
            pipeline,
            span,
            ends_tx,
            ends,
            tracker: TaskTracker::new(),
        }
    }

    /// Spawns `fut` as task `name`. In debug builds `STREAMHOST_FAULT=panic:<name>`
    /// (or `panic:<pipeline>/<name>`) makes it panic shortly after start, for
    /// the tests of supervision.
    pub fn spawn(
        &self,
        name: &'static str,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> Task {
        let faulty = crate::fault::injected(&format!("panic:{name}"))
            || crate::fault::injected(&format!("panic:{}/{name}", self.pipeline));
        let fut: Pin<Box<dyn Future<Output = ()> + Send>> = if faulty {
            Box::pin(panicking_after(name, Duration::from_millis(500), fut))
        } else {
            Box::pin(fut)
        };
        let handle = self.tracker.spawn(fut.instrument(self.span.clone()));
        let abort = handle.abort_handle();
        let (done_tx, done) = watch::channel(false);
        let ends = self.ends_tx.clone();
        tokio::spawn(async move {
            let how = match handle.await {
                Ok(()) => "returned".to_owned(),
                Err(e) if e.is_panic() => {
                    format!("panicked: {}", panic_message(&*e.into_panic()))
                }
                Err(_) => "aborted".to_owned(),
            };
            let _ = ends.send(TaskEnd {
                task: name.to_owned(),
                how,
            });
            let _ = done_tx.send(true);
        });
        Task { done, abort }
    }

    /// Starts `f` on an OS thread called `name`, reporting its end.
    pub fn thread(
        &self,
        name: String,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let ends = self.ends_tx.clone();
        let task = name.clone();
        let span = self.span.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            let _report = EndReport { task, ends };
            let _in_pipeline = span.enter();
            f()
        })
    }

    /// Waits at most `limit` for every task to end; `false` if some still run.
    pub async fn all_ended(&self, limit: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// The first end reported so far that was a panic: ends during a drain
    /// are expected, panics never are.
    pub fn panicked(&mut self) -> Option<TaskEnd> {
        while let Ok(end) = self.ends.try_recv() {
            if end.how.starts_with("panicked") {
                return Some(end);
            }
        }
        None
    }

    /// The next end of any task or thread — or rather of the first to fail:
    /// one task's death soon ends others that depend on it (a worker whose
    /// committer is gone returns), so the ends that follow within a moment
    /// are looked at too, and a panic among them is the one reported.
    pub async fn next_end(&mut self) -> TaskEnd {
        let Some(first) = self.ends.recv().await else {
            // Never: `self` holds a sender.
            return std::future::pending().await;
        };
        if first.how.starts_with("panicked") {
            return first;
        }
        let settle = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => return first,
                Some(end) = self.ends.recv() => {
                    if end.how.starts_with("panicked") {
                        return end;
                    }
                }
            }
        }
    }
}

/// `fut`, made to panic after `delay` while it is still alive, as a real
/// panic would: what it owns (its channels) is dropped only as the panic
/// unwinds, after the panic hook has run. Dropped first (as a `select!` arm
/// does), its dependants could end and be reported before a slow hook — one
/// printing a backtrace on a busy machine — let the panic be.
async fn panicking_after(name: &'static str, delay: Duration, fut: impl Future<Output = ()>) {
    let deadline = tokio::time::sleep(delay);
    tokio::pin!(fut, deadline);
    std::future::poll_fn(|cx| {
        if deadline.as_mut().poll(cx).is_ready() {
            panic!("injected fault: panic:{name}")
        }
        fut.as_mut().poll(cx)
    })
    .await;
}

/// Reports a thread's end when it unwinds or returns.
struct EndReport {
    task: String,
    ends: mpsc::UnboundedSender<TaskEnd>,
}

impl Drop for EndReport {
    fn drop(&mut self) {
        let how = if std::thread::panicking() {
            "panicked".to_owned()
        } else {
            "returned".to_owned()
        };
        let _ = self.ends.send(TaskEnd {
            task: std::mem::take(&mut self.task),
            how,
        });
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Paused time: the settle window and the abort deadline are timers.
    #[tokio::test(start_paused = true)]
    async fn every_end_is_reported_with_its_cause() {
        let mut s = Supervisor::new("p".into(), Span::none());
        let mut ok = s.spawn("quiet", async {});
        assert_eq!(
            s.next_end().await,
            TaskEnd {
                task: "quiet".into(),
                how: "returned".into()
            }
        );
        ok.finished().await;
        let _boom = s.spawn("boom", async { panic!("disk on fire") });
        let end = s.next_end().await;
        assert_eq!(end.task, "boom");
        assert_eq!(end.how, "panicked: disk on fire");
        let t = s
            .thread("worker-0".into(), || panic!("thread down"))
            .unwrap();
        let _ = t.join();
        let end = s.next_end().await;
        assert_eq!(
            (end.task.as_str(), end.how.as_str()),
            ("worker-0", "panicked")
        );
        let mut stuck = s.spawn("stuck", std::future::pending());
        assert!(!stuck.finish_within(Duration::from_millis(10)).await);
        assert_eq!(s.next_end().await.how, "aborted");
    }

    /// An injected panic is raised with the task's future alive: what the
    /// task owns is dropped by the unwinding, not before the panic.
    #[tokio::test(start_paused = true)]
    async fn an_injected_panic_unwinds_through_the_live_task() {
        struct Owned(Arc<AtomicBool>);
        impl Drop for Owned {
            fn drop(&mut self) {
                self.0.store(std::thread::panicking(), Ordering::SeqCst);
            }
        }
        let dropped_unwinding = Arc::new(AtomicBool::new(false));
        let owned = Owned(dropped_unwinding.clone());
        let task = tokio::spawn(panicking_after(
            "committer",
            Duration::from_millis(500),
            async move {
                let _owned = owned;
                std::future::pending::<()>().await;
            },
        ));
        let end = task.await.unwrap_err();
        assert_eq!(
            panic_message(&*end.into_panic()),
            "injected fault: panic:committer"
        );
        assert!(dropped_unwinding.load(Ordering::SeqCst));
    }
}
