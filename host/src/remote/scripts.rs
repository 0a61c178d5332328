//! The Lua scripts that make `incr` and `touch` (and releasing a single-flight lock) one
//! atomic step in Redis, each on one key (so they run on a cluster too).

use std::sync::LazyLock;

use redis::Script;

/// The largest counter magnitude the Redis tier computes exactly: Redis's Lua numbers are
/// doubles, exact up to 2^53.
pub(crate) const EXACT_COUNTER_LIMIT: i64 = 1 << 53;

/// `incr`: KEYS\[1\] the value key; ARGV delta, default, PX milliseconds (0: no expiry) for a
/// counter this call creates. The value is the local tier's bytes, a CBOR integer (shortest
/// form, as the engine writes it). Replies `{new value bytes, PTTL}`; errors `NOTACOUNTER` and
/// `OVERFLOW` change nothing. An existing counter keeps its expiry (`KEEPTTL`).
pub(crate) static INCR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function decode(s)
  local b = string.byte(s, 1)
  if not b then return nil end
  local major = math.floor(b / 32)
  local info = b % 32
  if major > 1 then return nil end
  local n
  if info < 24 then
    if #s ~= 1 then return nil end
    n = info
  elseif info <= 27 then
    local size = 2 ^ (info - 24)
    if #s ~= 1 + size then return nil end
    n = 0
    for i = 2, 1 + size do n = n * 256 + string.byte(s, i) end
  else
    return nil
  end
  if major == 1 then n = -1 - n end
  return n
end
local function encode(n)
  local head = 0
  if n < 0 then head = 32; n = -1 - n end
  if n < 24 then return string.char(head + n) end
  local size, info
  if n < 256 then size, info = 1, 24
  elseif n < 65536 then size, info = 2, 25
  elseif n < 4294967296 then size, info = 4, 26
  else size, info = 8, 27 end
  local bytes = {}
  for i = size, 1, -1 do bytes[i] = n % 256; n = math.floor(n / 256) end
  return string.char(head + info) .. string.char(unpack(bytes))
end
local limit = 9007199254740992
local delta = tonumber(ARGV[1])
local px = tonumber(ARGV[3])
local old = redis.call('GET', KEYS[1])
local n
if old then
  n = decode(old)
  if n == nil then return redis.error_reply('NOTACOUNTER the value is not an integer counter') end
else
  n = tonumber(ARGV[2])
end
local result = n + delta
if math.abs(n) >= limit or math.abs(result) >= limit then
  return redis.error_reply('OVERFLOW the counter would leave the range the Redis tier computes exactly (+-2^53)')
end
local bytes = encode(result)
if old then
  redis.call('SET', KEYS[1], bytes, 'KEEPTTL')
elseif px > 0 then
  redis.call('SET', KEYS[1], bytes, 'PX', px)
else
  redis.call('SET', KEYS[1], bytes)
end
return {bytes, redis.call('PTTL', KEYS[1])}
"#,
    )
});

/// `touch`: KEYS\[1\] the value key; ARGV PX milliseconds, 0 for no expiry (`PERSIST`).
/// Replies 1 if the key was there, 0 on a miss (nothing changed).
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(ARGV[1]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"#,
    )
});

/// Releases a single-flight lock: KEYS\[1\] the lock key, ARGV\[1\] the holder's token. Deletes
/// the lock only if the token is still ours (it may have expired and been taken by another).
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});
