//! Connections to Redis: the command connection (one server or a cluster), its timeouts, and
//! Redis errors as [`Error::Remote`].

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, Value};

use crate::error::{Error, Result};

/// How long one command may wait for its reply before it fails with `Error::Remote`.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis error as the cache reports it: unreachable (connection refused, reset, timed out)
/// or refused by the server.
pub(crate) fn remote(err: redis::RedisError) -> Error {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        Error::Remote(format!("cannot reach Redis (retrying by itself): {err}"))
    } else {
        Error::Remote(format!("Redis refused the command: {err}"))
    }
}

/// `url` without its password, for logs and `Debug`.
pub(crate) fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Where the cache's Redis tier is: one server, or the seed nodes of a cluster
/// (`redis://a:1,redis://b:2,…`).
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// One server (RESP3).
    Single(redis::Client),
    /// A Redis Cluster, by its seed nodes (RESP3).
    Cluster(Vec<redis::ConnectionInfo>),
}

impl Target {
    /// Parses the option: one URL is one server; URLs separated by commas are the seed nodes of
    /// a cluster. Every connection speaks RESP3 (invalidations arrive as pushes).
    ///
    /// Edge cases: an empty or malformed URL, or `rediss://` (no TLS in this build), is
    /// `Error::Config` naming `CACHE_REDIS_URL`.
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let config = |message: String| Error::Config {
            variable: crate::env::ENV_REDIS_URL.to_owned(),
            message,
        };
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(config("an empty Redis URL".to_owned()));
        }
        let mut infos = Vec::new();
        for one in &urls {
            if one.starts_with("rediss://") {
                return Err(config(format!(
                    "{}: TLS (rediss://) is not built in; use a TLS proxy or a Unix socket",
                    redacted_url(one)
                )));
            }
            let info = one
                .into_connection_info()
                .map_err(|err| config(format!("{}: {err}", redacted_url(one))))?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            infos.push(info.set_redis_settings(settings));
        }
        if infos.len() == 1 {
            let client = redis::Client::open(infos.pop().unwrap())
                .map_err(|err| config(format!("{}: {err}", redacted_url(url))))?;
            Ok(Target::Single(client))
        } else {
            Ok(Target::Cluster(infos))
        }
    }

    /// A command connection, reconnecting by itself.
    ///
    /// # Errors
    /// `Error::Remote` if the server (or no seed node) answers within [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(&self) -> Result<Conn> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(remote)?;
                Ok(Conn::Single(manager))
            }
            Target::Cluster(seeds) => {
                let client = ClusterClient::builder(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(1)
                    .build()
                    .map_err(remote)?;
                let connection = client.get_async_connection().await.map_err(remote)?;
                Ok(Conn::Cluster(connection))
            }
        }
    }
}

/// A command connection to one server or to a cluster; cheap to clone (a handle to one
/// multiplexed connection).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting by itself.
    Single(ConnectionManager),
    /// A cluster, routing each command by its key's slot.
    Cluster(ClusterConnection),
    /// One node of a cluster, for commands that concern that node only (`SCAN`).
    Node(redis::aio::MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Node(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Node(c) => c.get_db(),
        }
    }
}

/// CRC16/XMODEM, Redis Cluster's key hash.
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of `key`: the hash of its hash tag (`{…}`, non-empty) or of all of it.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// Runs `commands` (each `(key, command)` touching that key only) in pipelines: one on a
/// single server, one per slot on a cluster (a pipeline must not cross slots there). Replies
/// in the order of `commands`.
///
/// # Errors
/// The first command (or connection) error.
pub(crate) async fn per_key(
    conn: &Conn,
    commands: Vec<(String, Cmd)>,
) -> redis::RedisResult<Vec<Value>> {
    let mut groups: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (index, (key, _)) in commands.iter().enumerate() {
        let group = match conn {
            Conn::Cluster(_) => slot(key.as_bytes()),
            _ => 0,
        };
        groups.entry(group).or_default().push(index);
    }
    let mut replies = vec![Value::Nil; commands.len()];
    for indices in groups.into_values() {
        let mut pipe = redis::pipe();
        for &index in &indices {
            pipe.add_command(commands[index].1.clone());
        }
        let values: Vec<Value> = pipe.query_async(&mut conn.clone()).await?;
        for (index, value) in indices.into_iter().zip(values) {
            replies[index] = value;
        }
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster_hashing() {
        // Redis Cluster's specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
    }

    #[test]
    fn urls_parse_and_passwords_are_redacted() {
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379").unwrap(),
            Target::Single(_)
        ));
        assert!(matches!(
            Target::parse("redis://127.0.0.1:1, redis://127.0.0.1:2").unwrap(),
            Target::Cluster(seeds) if seeds.len() == 2
        ));
        assert!(matches!(
            Target::parse("redis+unix:///tmp/r.sock").unwrap(),
            Target::Single(_)
        ));
        for bad in ["", "http://x", "rediss://h:1"] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.to_string().contains("CACHE_REDIS_URL"), "{bad}: {err}");
        }
        assert_eq!(
            redacted_url("redis://user:secret@host:1/0"),
            "redis://***@host:1/0"
        );
        assert_eq!(redacted_url("redis://host:1"), "redis://host:1");
    }
}
