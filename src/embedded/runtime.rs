//! The one actix `System` an embedded cluster's nodes, client ports and
//! clients live on, on a thread of its own.
//!
//! rhai and C calls are synchronous; ringkv is async. [`Runtime::run`] sends a
//! closure to the runtime thread, which starts the future it makes there
//! (so the future need not be `Send`: `Node::spawn`'s is not), and blocks
//! the calling thread until the future's output comes back. Each node still
//! runs on its own arbiter thread, as `Node::spawn` arranges; the runtime
//! thread only hosts the requests and the glue.
//!
//! Not here: any knowledge of nodes or clients.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

/// A closure run on the runtime thread, inside the actix `System`.
type Job = Box<dyn FnOnce() + Send>;

/// A handle to the runtime thread. Dropping it ends the thread once the
/// futures it started have been dropped.
pub struct Runtime {
    jobs: mpsc::UnboundedSender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the runtime thread and its actix `System`.
    pub fn new() -> Result<Runtime, String> {
        let (jobs, mut inbox) = mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ringkv-embedded-runtime".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    while let Some(job) = inbox.recv().await {
                        job();
                    }
                });
            })
            .map_err(|e| format!("starting the runtime thread: {e}"))?;
        Ok(Runtime {
            jobs,
            thread: Some(thread),
        })
    }

    /// Runs the future that `make` builds on the runtime thread and waits
    /// for its output.
    pub fn run<F, Fut, T>(&self, make: F) -> Result<T, String>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            actix::spawn(async move {
                let _ = tx.send(make().await);
            });
        });
        self.jobs
            .send(job)
            .map_err(|_| "the embedded runtime has stopped".to_string())?;
        rx.recv()
            .map_err(|_| "the embedded runtime dropped a request".to_string())
    }

    /// Starts the future that `make` builds on the runtime thread without
    /// waiting for it.
    pub fn spawn<F, Fut>(&self, make: F) -> Result<(), String>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let job: Job = Box::new(move || {
            actix::spawn(make());
        });
        self.jobs
            .send(job)
            .map_err(|_| "the embedded runtime has stopped".to_string())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Closing the channel ends the loop; the System ends with it.
        let (closed, _) = mpsc::unbounded_channel();
        self.jobs = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_non_send_futures_inside_a_system() {
        let rt = Runtime::new().unwrap();
        let inside = rt
            .run(|| async {
                let local = std::rc::Rc::new(5);
                tokio::task::yield_now().await;
                (*local, actix::System::try_current().is_some())
            })
            .unwrap();
        assert_eq!(inside, (5, true));
    }
}
