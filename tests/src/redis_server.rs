//! Private Redis servers for the tests: one on a Unix socket, or a 3-master cluster on
//! loopback ports, persistence off, killed when dropped.
//!
//! The server binary is `$PCACHE_REDIS_SERVER`, else `redis-server` on `PATH`, else Debian's
//! `redis-check-rdb` (package `redis-tools`), which is the server when started as
//! `redis-server` (argv\[0\]). Without one, [`RedisServer::start_or_skip`] prints a loud
//! message and returns `None`; under `CI=true` it panics instead, so CI cannot pass by
//! skipping.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The server binary and the argv\[0\] to start it with.
fn server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PCACHE_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    for name in ["redis-server", "redis-check-rdb"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// `redis-cli`, next to the server binary or on `PATH` (the cluster set-up needs it).
fn cli_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| candidate.is_file())
}

/// Says loudly that `test` did not run, and fails under `CI=true`.
fn skip(test: &str, why: &str) {
    let message = format!(
        "SKIPPED {test}: {why}. Install Redis (`apt-get install redis-tools`) or set \
         PCACHE_REDIS_SERVER to a redis-server binary."
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a skipped Redis test fails the run)");
    }
    eprintln!("\n!!!!!!!! {message}\n");
}

/// Sends one inline command over `stream` and returns the first reply line.
fn command(stream: &mut impl ReadWrite, line: &str) -> std::io::Result<String> {
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    command_line(stream)
}

/// Reads one reply: its line, or for a bulk string (`$N`) its body.
fn command_line(stream: &mut impl ReadWrite) -> std::io::Result<String> {
    let line = read_line(stream)?;
    match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        Some(len) => {
            let mut body = vec![0u8; len + 2];
            stream.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        None => Ok(line),
    }
}

fn read_line(stream: &mut impl ReadWrite) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Where a server listens.
#[derive(Clone, Debug)]
enum Listen {
    Socket(PathBuf),
    Port(u16),
}

impl Listen {
    fn connect(&self) -> std::io::Result<Box<dyn ReadWrite>> {
        let stream: Box<dyn ReadWrite> = match self {
            Listen::Socket(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                Box::new(stream)
            }
            Listen::Port(port) => {
                let stream = std::net::TcpStream::connect(("127.0.0.1", *port))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                Box::new(stream)
            }
        };
        Ok(stream)
    }
}

/// One private Redis server process. Dropping it kills it (SIGKILL) and removes its files.
pub struct RedisServer {
    child: Option<Child>,
    binary: PathBuf,
    listen: Listen,
    dir: PathBuf,
    extra: Vec<String>,
    _scratch: Option<tempfile_dir::Scratch>,
}

impl RedisServer {
    /// A server on a Unix socket in a fresh scratch directory, or `None` (after a loud
    /// message) when no server binary is installed. Panics under `CI=true` instead of
    /// skipping, and whenever a server that exists fails to start.
    pub fn start_or_skip(test: &str) -> Option<RedisServer> {
        let Some(binary) = server_binary() else {
            skip(test, "no redis-server (or redis-check-rdb) on PATH");
            return None;
        };
        let scratch = tempfile_dir::Scratch::new("pcache-redis");
        let listen = Listen::Socket(scratch.path().join("redis.sock"));
        let mut server = RedisServer {
            child: None,
            binary,
            listen,
            dir: scratch.path().to_owned(),
            extra: Vec::new(),
            _scratch: Some(scratch),
        };
        server.start();
        Some(server)
    }

    /// The URL the cache takes (`CacheOptions::redis`, `pcache --redis`).
    pub fn url(&self) -> String {
        match &self.listen {
            Listen::Socket(path) => format!("redis+unix://{}", path.display()),
            Listen::Port(port) => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// Starts the server process (again, after [`kill`](Self::kill)) and waits until it
    /// answers PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let mut command = Command::new(&self.binary);
        command.arg0("redis-server");
        match &self.listen {
            Listen::Socket(path) => {
                let _ = std::fs::remove_file(path);
                command
                    .args(["--port", "0", "--unixsocket"])
                    .arg(path)
                    .args(["--unixsocketperm", "700"]);
            }
            Listen::Port(port) => {
                command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
            }
        }
        command
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().expect("start the Redis server");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = self.listen.connect() {
                if command_reply(&mut stream, "PING").as_deref() == Some("+PONG") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the Redis server exited at start: {status}");
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the Redis server did not answer PING within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the server with SIGKILL and waits for it to exit (everything it held is lost:
    /// persistence is off).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one inline command (`"CLIENT KILL TYPE normal"`) and returns its first reply line.
    pub fn command(&self, line: &str) -> String {
        let mut stream = self.listen.connect().expect("connect to the Redis server");
        command(&mut stream, line).expect("a reply from the Redis server")
    }

    /// Runs `commands` (inline) as one `MULTI`/`EXEC` transaction and returns the reply line
    /// of each (simple replies only: status, integer, error).
    pub fn transaction(&self, commands: &[String]) -> Vec<String> {
        let mut stream = self.listen.connect().expect("connect to the Redis server");
        assert_eq!(command(&mut stream, "MULTI").unwrap(), "+OK");
        for line in commands {
            let queued = command(&mut stream, line).unwrap();
            assert_eq!(queued, "+QUEUED", "{line}");
        }
        let count = command(&mut stream, "EXEC").unwrap();
        let count: usize = count
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("EXEC replied {count}"));
        (0..count)
            .map(|_| command_line(&mut stream).unwrap())
            .collect()
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

fn command_reply(stream: &mut impl ReadWrite, line: &str) -> Option<String> {
    command(stream, line).ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback ports, no replicas. Dropping it kills every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    _scratch: tempfile_dir::Scratch,
}

impl RedisCluster {
    /// Three masters on free loopback ports, the 16384 slots spread over them, or `None` (after
    /// a loud message) when no server binary or no `redis-cli` is installed; panics under
    /// `CI=true` instead.
    pub fn start_or_skip(test: &str) -> Option<RedisCluster> {
        let Some(binary) = server_binary() else {
            skip(test, "no redis-server (or redis-check-rdb) on PATH");
            return None;
        };
        let Some(cli) = cli_binary() else {
            skip(test, "no redis-cli on PATH (the cluster set-up needs it)");
            return None;
        };
        let scratch = tempfile_dir::Scratch::new("pcache-redis-cluster");
        let mut nodes = Vec::new();
        for index in 0..3 {
            let dir = scratch.path().join(format!("node{index}"));
            std::fs::create_dir(&dir).unwrap();
            // A port that was free a moment ago; a clash makes the start fail loudly.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut node = RedisServer {
                child: None,
                binary: binary.clone(),
                listen: Listen::Port(port),
                dir: dir.clone(),
                extra: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join("nodes.conf").display().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
                _scratch: None,
            };
            node.start();
            nodes.push(node);
        }
        let mut create = Command::new(cli);
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(node.url().trim_start_matches("redis://"));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let started = Instant::now();
        while !nodes.iter().all(|node| {
            let mut stream = node.listen.connect().unwrap();
            stream.write_all(b"CLUSTER INFO\r\n").unwrap();
            let mut reply = [0u8; 512];
            let n = stream.read(&mut reply).unwrap_or(0);
            String::from_utf8_lossy(&reply[..n]).contains("cluster_state:ok")
        }) {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(RedisCluster {
            nodes,
            _scratch: scratch,
        })
    }

    /// The seed URLs of the three masters.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The masters.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// A scratch directory removed on drop (the tests crate's library has no `tempfile`).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Scratch(PathBuf);

    impl Scratch {
        pub fn new(label: &str) -> Scratch {
            let path = std::env::temp_dir().join(format!(
                "{label}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
