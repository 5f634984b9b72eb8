//! Child processes and temporary files that never outlive the process that made them.
//!
//! Each server is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when its
//! parent goes — even after `kill -9` of a test binary or of `drover lab up`. The signal follows
//! the parent *thread*, and test threads come and go, so every child is spawned from one thread
//! that lives as long as the process. Children still alive at a normal exit are killed by an
//! `atexit` handler (statics, such as a control plane shared by a test binary, are never dropped).
//!
//! Temporary files and directories are handed to a *janitor*: a small `sh` started once, which
//! reads paths from a pipe and removes them all when the pipe closes — that is, when this
//! process ends, however it ends (the kernel closes the pipe even after SIGKILL). It ignores
//! the terminal's signals, so a Ctrl-C that reaches the whole process group does not stop it
//! before it has cleaned up.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Where `program` is on `PATH` (or the file itself, when it names a path), if anywhere.
pub fn on_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

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

/// Remove `path` (a file or a directory) when this process ends, if it is still there —
/// at a normal exit, and through the janitor after any other end, SIGKILL included.
pub fn remove_at_exit(path: PathBuf) {
    janitor(&path);
    dirs().lock().unwrap_or_else(|e| e.into_inner()).push(path);
}

/// Hand `path` to the janitor (started on first use). Without `sh` the atexit handler alone
/// cleans up, which covers every end but a kill.
fn janitor(path: &std::path::Path) {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    static JANITOR: OnceLock<Option<Mutex<std::process::ChildStdin>>> = OnceLock::new();
    let pipe = JANITOR.get_or_init(|| {
        // Paths arrive one per line; at end of input (this process gone) every one is removed.
        let script =
            r#"trap '' INT TERM HUP QUIT; set --; while IFS= read -r p; do set -- "$@" "$p"; done; rm -rf -- "$@""#;
        Command::new("sh")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut c| c.stdin.take())
            .map(Mutex::new)
    });
    let bytes = path.as_os_str().as_bytes();
    if let Some(pipe) = pipe
        && !bytes.contains(&b'\n')
    {
        let mut pipe = pipe.lock().unwrap_or_else(|e| e.into_inner());
        let _ = pipe.write_all(bytes).and_then(|_| pipe.write_all(b"\n")).and_then(|_| pipe.flush());
    }
}

fn live() -> &'static Mutex<Vec<u32>> {
    static LIVE: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

fn dirs() -> &'static Mutex<Vec<PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(Mutex::default)
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// `cmd.spawn_dying_with_parent()`: [`spawn`] for a command built in place.
pub trait DiesWithParent {
    fn spawn_dying_with_parent(&mut self) -> std::io::Result<Child>;
}

impl DiesWithParent for Command {
    fn spawn_dying_with_parent(&mut self) -> std::io::Result<Child> {
        spawn(std::mem::replace(self, Command::new("true")))
    }
}

fn register_atexit() {
    extern "C" fn at_exit() {
        if let Ok(pids) = live().try_lock() {
            // Only processes that are still our children: a child reaped without `reaped()`
            // may have left its pid to an unrelated process.
            for pid in pids.iter().filter(|p| parent_of(**p) == Some(std::process::id())) {
                // SAFETY: signalling a child of ours by its pid.
                unsafe {
                    libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        if let Ok(dirs) = dirs().try_lock() {
            for d in dirs.iter() {
                let _ = std::fs::remove_dir_all(d).or_else(|_| std::fs::remove_file(d));
            }
        }
    }
    // SAFETY: registering a plain function with the C runtime.
    unsafe {
        libc::atexit(at_exit);
    }
}

/// Make every file this process creates private to its user (0600, directories 0700): the
/// journal, reports, previews and lab secrets hold operator data. Returns the umask it replaced,
/// which child processes running an operator's own commands get back ([`operator_umask`]).
pub fn private_files() {
    // SAFETY: umask only swaps the process's file-creation mask.
    let before = unsafe { libc::umask(0o077) };
    let _ = OPERATOR_UMASK.set(before);
}

static OPERATOR_UMASK: OnceLock<libc::mode_t> = OnceLock::new();

/// The umask the process started with (before [`private_files`]), for commands run on the
/// operator's behalf; `None` when it was never changed.
pub fn operator_umask() -> Option<libc::mode_t> {
    OPERATOR_UMASK.get().copied()
}

/// Write `bytes` to `path` readable by this user only (0600), whatever the umask.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode on open: make it private too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

/// Create `dir` and its missing parents as 0700 directories, whatever the umask.
pub fn create_private_dir_all(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Start a server on `count` loopback ports picked here (free for TCP and UDP), and wait until
/// it — not some other process — listens on each of them (TCP). A port is only free until
/// someone binds it: a server started in the same instant by a parallel test may be handed the
/// same one, and then ours exits (address in use) while connecting to the port reaches the
/// other. So ownership is checked in `/proc`, and a server that exits before listening while
/// another process holds one of its ports is started again on fresh ports (up to five times);
/// one that exits with its ports free failed for its own reasons (a bad flag or config) and is
/// not. `command` builds the command for the ports.
pub fn start_on_free_ports(
    count: usize,
    timeout: std::time::Duration,
    mut command: impl FnMut(&[u16]) -> Command,
) -> Result<(Child, Vec<u16>), String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last_exit = String::new();
    for _ in 0..5 {
        let ports = free_ports(count)?;
        let mut cmd = command(&ports);
        let program = cmd.get_program().to_string_lossy().into_owned();
        let by_hand = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = spawn(std::mem::replace(&mut cmd, Command::new("true")))
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                reaped(child.id());
                if !ports.iter().any(|&p| held_by_another(p)) {
                    return Err(format!(
                        "{program} exited ({status}) before listening on {ports:?}; run `{by_hand}` to see its own error"
                    ));
                }
                last_exit = format!(
                    "{program} exited ({status}) before listening on {ports:?}, five times; run `{by_hand}` to see its own error"
                );
                break;
            }
            if ports.iter().all(|p| listens_on(child.id(), *p)) {
                return Ok((child, ports));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                reaped(child.id());
                return Err(format!(
                    "{program} did not listen on {ports:?} within {timeout:?}; run `{by_hand}` to see what holds it"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Err(last_exit)
}

/// Whether some socket binds the loopback `port` now (TCP or UDP). Probed without
/// `SO_REUSEADDR` (std sets it on listeners): a connection lingering on the port counts as
/// holding it, as it does for a server that does not set it either.
fn held_by_another(port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    [Type::STREAM, Type::DGRAM]
        .into_iter()
        .any(|t| Socket::new(Domain::IPV4, t, None).and_then(|s| s.bind(&addr.into())).is_err())
}

/// `count` distinct loopback ports that nothing binds right now, for TCP and UDP alike.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let mut held = Vec::with_capacity(count);
    while held.len() < count {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
        let port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            held.push(tcp);
        }
    }
    Ok(held.iter().filter_map(|l| l.local_addr().ok()).map(|a| a.port()).collect())
}

/// Whether `pid` or one of its descendants holds a listening TCP socket on `port`.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_sockets(port);
    !inodes.is_empty() && process_tree(pid).iter().any(|p| holds_any(*p, &inodes))
}

/// The inodes of the listening TCP sockets (IPv4 and IPv6) bound to `port`, from `/proc/net`.
fn listening_sockets(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut inodes = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        // `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`
        for fields in text.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            let bound = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if bound == Some(port) && *state == LISTEN {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

fn holds_any(pid: u32, sockets: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|target| {
        let target = target.to_string_lossy();
        sockets.iter().any(|s| *s == target)
    })
}

/// `pid` and its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", tree[i])).into_iter().flatten().flatten();
        for task in tasks {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
        i += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A real server (python3's http.server) whose port another process took between the
    /// moment it was picked and the moment the server bound it: connecting to the port would
    /// succeed — reaching the thief — so only ownership tells; the server is started again on
    /// a fresh port.
    #[test]
    fn a_server_beaten_to_its_port_is_started_again_on_another() {
        let mut thief = None;
        let (mut child, ports) = start_on_free_ports(1, Duration::from_secs(30), |ports| {
            if thief.is_none() {
                thief = Some(std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap());
            }
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "http.server", &ports[0].to_string(), "--bind", "127.0.0.1"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            cmd
        })
        .unwrap();
        let taken = thief.as_ref().unwrap().local_addr().unwrap().port();
        assert_ne!(ports[0], taken);
        assert!(listens_on(child.id(), ports[0]));
        assert!(!listens_on(child.id(), taken), "the thief's socket is not the server's");
        // A server that fails on its own, its port left free: started once, not five times.
        let mut started = 0;
        let err = start_on_free_ports(1, Duration::from_secs(10), |_| {
            started += 1;
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "exit 3"]);
            cmd
        })
        .unwrap_err();
        assert!(err.contains("exited (exit status: 3) before listening"), "{err}");
        assert!(err.ends_with("; run `sh -c exit 3` to see its own error"), "{err}");
        assert_eq!(started, 1, "a server whose ports nobody took is not started again");
        let _ = child.kill();
        let _ = child.wait();
        reaped(child.id());
    }
}
