//! Redis key names of one cache namespace: `NS:v:KEY` for values, `NS:l:KEY` for locks.

/// The key names of one cache namespace.
#[derive(Clone, Debug)]
pub(crate) struct Namespace {
    values: String,
    locks: String,
}

impl Namespace {
    /// The names under `namespace` (non-empty; checked by the caller).
    pub(crate) fn new(namespace: &str) -> Namespace {
        Namespace {
            values: format!("{namespace}:v:"),
            locks: format!("{namespace}:l:"),
        }
    }

    /// The prefix of every value key: what the invalidation connection tracks.
    pub(crate) fn value_prefix(&self) -> &str {
        &self.values
    }

    /// The Redis key holding `key`'s value.
    pub(crate) fn value(&self, key: &str) -> String {
        format!("{}{key}", self.values)
    }

    /// The Redis key of `key`'s single-flight lock.
    pub(crate) fn lock(&self, key: &str) -> String {
        format!("{}{key}", self.locks)
    }

    /// The cache key a Redis value key names; `None` for keys outside the namespace or not
    /// UTF-8 (nothing of ours).
    pub(crate) fn key_of<'a>(&self, redis_key: &'a [u8]) -> Option<&'a str> {
        let rest = redis_key.strip_prefix(self.values.as_bytes())?;
        std::str::from_utf8(rest).ok()
    }

    /// The `SCAN MATCH` pattern of every value key whose cache key starts with `prefix`: the
    /// namespace and the prefix with glob characters escaped, then `*`.
    pub(crate) fn pattern(&self, prefix: &str) -> String {
        let mut pattern = String::with_capacity(self.values.len() + prefix.len() + 1);
        for c in self.values.chars().chain(prefix.chars()) {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_patterns_escaped() {
        let ns = Namespace::new("app");
        assert_eq!(ns.value("user:1"), "app:v:user:1");
        assert_eq!(ns.lock("user:1"), "app:l:user:1");
        assert_eq!(ns.key_of(b"app:v:user:1"), Some("user:1"));
        assert_eq!(ns.key_of(b"app:l:user:1"), None);
        assert_eq!(ns.key_of(b"other:v:x"), None);
        assert_eq!(ns.pattern("a*b?[c]\\"), "app:v:a\\*b\\?\\[c\\]\\\\*");
        assert_eq!(ns.pattern(""), "app:v:*");
    }
}
