//! The controller under test, as its own process, so its memory is its own: the
//! `corral-controller` binary built next to this one, or a stock `ipcontroller` command
//! (the same peers drive both, for a side-by-side figure).

use corral_wire::{ClientConnection, EngineConnection, ProfileLocation};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ControllerProcess {
    child: Child,
    pub client: ClientConnection,
    pub engine: EngineConnection,
}

fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.with_file_name("corral-controller");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --release -p corral-controller)",
        path.display()
    );
    path
}

impl ControllerProcess {
    /// Starts `stock` (an `ipcontroller` path) if given, else corral's controller; waits for
    /// its connection files. The cluster key is the one the controller writes.
    ///
    /// `CORRAL_W9_WRAPPER` (e.g. `valgrind --tool=callgrind`) runs corral's controller
    /// under that command, to profile it.
    pub fn start(profile_dir: &Path, stock: Option<&Path>) -> ControllerProcess {
        let location = ProfileLocation::resolve(Some(profile_dir), None, "");
        let files = [
            location.connection_file("client"),
            location.connection_file("engine"),
        ];
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let mut command = match stock {
            Some(ipcontroller) => {
                let mut c = Command::new(ipcontroller);
                c.arg(format!("--profile-dir={}", profile_dir.display()))
                    .args(["--log-level=40", "--ip=127.0.0.1"]);
                c
            }
            None => {
                let wrapper = std::env::var("CORRAL_W9_WRAPPER").unwrap_or_default();
                let mut words = wrapper.split_whitespace();
                let mut c = match words.next() {
                    Some(program) => {
                        let mut c = Command::new(program);
                        c.args(words).arg(binary());
                        c
                    }
                    None => Command::new(binary()),
                };
                c.arg("--profile-dir").arg(profile_dir).args([
                    "--log-level",
                    "error",
                    "--hb-period",
                    "3000",
                ]);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the controller");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !files.iter().all(|f| f.exists()) {
            assert!(Instant::now() < deadline, "no connection files after 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200)); // a file can exist before it is complete
        ControllerProcess {
            child,
            client: ClientConnection::read(&files[0]).expect("client file"),
            engine: EngineConnection::read(&files[1]).expect("engine file"),
        }
    }

    /// The cluster key, as the controller wrote it.
    pub fn key(&self) -> &str {
        &self.client.key
    }

    /// The controller's process and its child processes (stock ipcontroller runs its
    /// schedulers as children).
    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }

    /// Resident memory now (VmRSS), in bytes, of the controller and its children.
    pub fn rss_bytes(&self) -> u64 {
        self.pids().into_iter().map(rss_of).sum()
    }

    /// CPU time used so far (user + system), in seconds, by the controller and its
    /// children: the difference across a measurement is what it cost the controller.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().map(cpu_of).sum()
    }
}

impl Drop for ControllerProcess {
    /// SIGTERM first, so that stock ipcontroller stops its scheduler processes too; then
    /// SIGKILL for what is left after 30 s (a profiler writing its output takes a while).
    fn drop(&mut self) {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for child in children.split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", child])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The unit of `/proc`'s CPU times: Linux's USER_HZ, 100 on every architecture it
/// exports to user space (ticks of 10 ms, so measurements should run for seconds).
const USER_HZ: f64 = 100.0;

/// utime + stime of `pid` from `/proc/<pid>/stat`, in seconds (0 if it is gone).
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')': state is field 3,
    // utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(14), ticks(15)) else {
        return 0.0;
    };
    (user + system) as f64 / USER_HZ
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
