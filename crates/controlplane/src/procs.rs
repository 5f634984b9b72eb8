//! Child processes that never outlive the process that started them.
//!
//! Each server is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when its
//! parent goes — even after `kill -9` of a test binary or of `drover lab up`. The signal follows
//! the parent *thread*, and test threads come and go, so every child is spawned from one thread
//! that lives as long as the process. Temporary directories and children still alive at a normal
//! exit are removed by an `atexit` handler (statics, such as a control plane shared by a test
//! binary, are never dropped).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("drover-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender is static: this thread lives until the process exits.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the process spawner thread");
        register_atexit();
        Mutex::new(tx)
    })
}

/// Start `cmd` so that it dies with this process, whatever ends it.
pub fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and kill are async-signal-safe, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner().lock().unwrap_or_else(|e| e.into_inner()).send((cmd, tx)).map_err(std::io::Error::other)?;
    let child = rx.recv().map_err(std::io::Error::other)??;
    live().lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
    Ok(child)
}

/// Forget a child that was waited for.
pub fn reaped(pid: u32) {
    live().lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
}

/// Remove `dir` at exit if it is still there.
pub fn remove_at_exit(dir: PathBuf) {
    dirs().lock().unwrap_or_else(|e| e.into_inner()).push(dir);
}

fn live() -> &'static Mutex<Vec<u32>> {
    static LIVE: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

fn dirs() -> &'static Mutex<Vec<PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(Mutex::default)
}

fn register_atexit() {
    extern "C" fn at_exit() {
        if let Ok(pids) = live().try_lock() {
            for pid in pids.iter() {
                // SAFETY: signalling a child of ours by its pid.
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        if let Ok(dirs) = dirs().try_lock() {
            for d in dirs.iter() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    // SAFETY: registering a plain function with the C runtime.
    unsafe {
        libc::atexit(at_exit);
    }
}
