//! What `host demo` leaves on the machine while it runs — its private
//! redis-server and its temporary directories — registered the moment each
//! exists, so that [`Leftovers::clean_up`] can remove them all on the way
//! out of a second signal, whose `exit` runs no destructors. Until then each
//! is removed by its own guard's drop, under the same lock, so a thing is
//! always owned by one of the two.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

/// Everything the demo must not leave behind.
#[derive(Debug, Default)]
pub struct Leftovers {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set by [`Leftovers::clean_up`]: the process is exiting, nothing new
    /// may be made.
    closed: bool,
    /// Process ids of children not yet reaped.
    children: Vec<u32>,
    /// Directories not yet removed.
    dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// An empty registry, shared by the demo and the signal handler.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not keep the clean-up from running.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns `command` and registers the child before anyone can ask for
    /// a clean-up: no moment exists in which it runs unregistered.
    pub fn spawn(&self, command: &mut Command) -> io::Result<Child> {
        let mut state = self.lock();
        if state.closed {
            return Err(closed());
        }
        let child = command.spawn()?;
        state.children.push(child.id());
        Ok(child)
    }

    /// Kills `child` (unless it already exited) and reaps it.
    pub fn end_child(&self, child: &mut Child) -> io::Result<()> {
        let mut state = self.lock();
        state.children.retain(|pid| *pid != child.id());
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        child.kill()?;
        child.wait().map(drop)
    }

    /// A new temporary directory named `prefix…`, registered as it is made.
    pub fn tempdir(self: &Arc<Self>, prefix: &str) -> io::Result<LeftoverDir> {
        let mut state = self.lock();
        if state.closed {
            return Err(closed());
        }
        let path = tempfile::Builder::new().prefix(prefix).tempdir()?.keep();
        state.dirs.push(path.clone());
        Ok(LeftoverDir {
            path,
            leftovers: self.clone(),
        })
    }

    fn remove_dir(&self, path: &Path) {
        let mut state = self.lock();
        if let Some(at) = state.dirs.iter().position(|d| d == path) {
            state.dirs.swap_remove(at);
            remove(path);
        }
    }

    /// SIGKILLs and reaps every registered child, removes every registered
    /// directory, and refuses to make anything after: for the exit on a
    /// second signal.
    pub fn clean_up(&self) {
        let mut state = self.lock();
        state.closed = true;
        for pid in state.children.drain(..) {
            if let Some(pid) = Pid::from_raw(pid as i32) {
                let _ = kill_process(pid, Signal::KILL);
                // Reaped, so it is gone (not a zombie) when the demo exits.
                let _ = waitpid(Some(pid), WaitOptions::empty());
            }
        }
        for dir in state.dirs.drain(..) {
            remove(&dir);
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the demo is exiting")
}

fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a temporary directory");
    }
}

/// A temporary directory removed on drop, or by [`Leftovers::clean_up`].
#[derive(Debug)]
pub struct LeftoverDir {
    path: PathBuf,
    leftovers: Arc<Leftovers>,
}

impl LeftoverDir {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LeftoverDir {
    fn drop(&mut self) {
        self.leftovers.remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_removes_what_is_registered_and_refuses_more() {
        let leftovers = Leftovers::new();
        let dir = leftovers.tempdir("streamhost-test-leftovers-").unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let mut child = leftovers.spawn(Command::new("sleep").arg("30")).unwrap();
        leftovers.clean_up();
        assert!(!dir.path().exists());
        assert!(child.try_wait().is_err(), "already reaped by the clean-up");
        let refused = leftovers.tempdir("streamhost-test-leftovers-");
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::Interrupted);
        drop(dir);
    }

    #[test]
    fn a_dropped_dir_is_removed_and_forgotten() {
        let leftovers = Leftovers::new();
        let dir = leftovers.tempdir("streamhost-test-leftovers-").unwrap();
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
        assert!(leftovers.lock().dirs.is_empty());
    }
}
