// Drives the PersistentCache guest component under jco (Node.js) on a host directory and prints
// one JSON line with what each call returned; tests/tests/jco.rs runs it and checks the results.
//
// usage: node roundtrip.mjs MODULE.js CACHE_DIR OTHER_DIR PHASE
//   MODULE.js  the module written by transpile.mjs (e.g. out/pcache.js)
//   CACHE_DIR  the host directory; the guest sees it as the preopen "/cache"
//   OTHER_DIR  a second directory, preopened as "/other": the same component instance opens a
//              second cache there (the `cache` resource), which must not see the first's keys
//   PHASE      first  — a new directory: every operation once
//              second — a new process on the same directory: what "first" left is still there
//              third  — after the Rust host wrote "from-rust" (CBOR text) and "raw-from-rust"
//                       (bytes) into the directory; ends with clear()
//
// JSON encoding of results: bytes -> lowercase hex string, none/undefined -> null, bigint (u64,
// s64) -> decimal string, a thrown ComponentError -> {"error": payload} (payload is the WIT
// error variant, {tag, val?}), any other exception -> {"thrown": "Name: message"}.
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { _setPreopens } from '@bytecodealliance/preview2-shim/filesystem';

const [modulePath, cacheDir, otherDir, phase] = process.argv.slice(2);
if (!modulePath || !cacheDir || !otherDir || !['first', 'second', 'third'].includes(phase)) {
  console.error('usage: node roundtrip.mjs MODULE.js CACHE_DIR OTHER_DIR first|second|third');
  process.exit(2);
}
const hostDir = resolve(cacheDir);
const hostOther = resolve(otherDir);
mkdirSync(hostDir, { recursive: true });
mkdirSync(hostOther, { recursive: true });
// Must run before the guest's `open` (which asks for the preopens); the guest reopens the
// preopen as "." itself, so the plain shim preopen is enough.
_setPreopens({ '/cache': hostDir, '/other': hostOther });
const { Cache } = (await import(pathToFileURL(resolve(modulePath)).href)).cache;

const utf8 = new TextEncoder();
const hex = (bytes) => Buffer.from(bytes).toString('hex');
/** CBOR (RFC 8949) encoding of a text string: what the Rust host's `set(key, &str)` stores. */
function cborText(text) {
  const body = utf8.encode(text);
  const n = body.length;
  let head;
  if (n < 24) head = [0x60 | n];
  else if (n < 0x100) head = [0x78, n];
  else if (n < 0x10000) head = [0x79, n >> 8, n & 0xff];
  else throw new RangeError('text too long for this small encoder');
  return Uint8Array.from([...head, ...body]);
}
function encode(value) {
  if (value === undefined || value === null) return null;
  if (value instanceof Uint8Array) return hex(value);
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) return value.map(encode);
  if (typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encode(v)]));
  }
  return value;
}
const results = {};
function call(label, fn) {
  if (label in results) throw new Error(`duplicate label ${label}`);
  try {
    results[label] = encode(fn());
  } catch (e) {
    // A WIT `result::err` arrives as a thrown ComponentError whose payload is the variant.
    if (e instanceof Error && e.constructor.name === 'ComponentError' && 'payload' in e) {
      results[label] = { error: encode(e.payload) };
    } else {
      results[label] = { thrown: e instanceof Error ? `${e.name}: ${e.message}` : JSON.stringify(encode(e)) };
    }
  }
}
/** Blocks this thread (the component API is synchronous). */
const sleepMs = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

// The WIT `expiry` variant.
const NEVER = { tag: 'never' };
const after = (ms) => ({ tag: 'after-ms', val: ms });
const HOUR_MS = 3_600_000n;
const options = (directory) => ({
  directory,
  sizeLimit: 64n << 20n,
  syncWrites: true,
  defaultTtlMs: undefined,
  readOnly: false,
  shared: false,
});
const started = performance.now();
let cache;
let other;
call('open', () => {
  cache = Cache.open(options('/cache'));
});
// A second cache in the same component instance, on its own directory.
call('open other', () => {
  other = Cache.open(options('/other'));
});
if (phase === 'first') {
  call('set bytes', () => cache.set('bytes', Uint8Array.from([0, 1, 2, 254, 255]), NEVER));
  call('set greeting', () => cache.set('greeting', cborText('hello from node ✓'), NEVER));
  call('set ttl', () => cache.set('ttl', utf8.encode('one hour'), after(HOUR_MS)));
  call('set short', () => cache.set('short', utf8.encode('gone soon'), after(1n)));
  call('set empty', () => cache.set('empty', new Uint8Array(0), NEVER));
  call('set big', () => cache.set('big', new Uint8Array(100_000).fill(7), NEVER));
  call('set tmp:1', () => cache.set('tmp:1', utf8.encode('x'), NEVER));
  call('set tmp:2', () => cache.set('tmp:2', utf8.encode('y'), NEVER));
  call('get bytes', () => cache.get('bytes'));
  call('get empty', () => cache.get('empty'));
  call('get missing', () => cache.get('missing'));
  sleepMs(20);
  call('get short', () => cache.get('short'));
  call('incr n', () => cache.incr('n', 5n, 0n, NEVER));
  call('incr n again', () => cache.incr('n', -2n, 0n, NEVER));
  call('incr bytes', () => cache.incr('bytes', 1n, 0n, NEVER));
  call('add bytes', () => cache.add('bytes', utf8.encode('no'), NEVER));
  call('add added', () => cache.add('added', utf8.encode('yes'), NEVER));
  call('touch added', () => cache.touch('added', after(HOUR_MS)));
  call('touch missing', () => cache.touch('missing', NEVER));
  call('keys', () => cache.keys('', undefined, 100));
  call('keys page', () => cache.keys('', 'big', 2));
  call('keys tmp', () => cache.keys('tmp:', undefined, 100));
  call('pop added', () => cache.pop('added'));
  call('pop added again', () => cache.pop('added'));
  call('delete tmp:1', () => cache.delete('tmp:1'));
  call('delete missing', () => cache.delete('missing'));
  call('delete-prefix tmp', () => cache.deletePrefix('tmp:'));
  call('expire', () => cache.expire());
  call('set empty key', () => cache.set('', utf8.encode('x'), NEVER));
  call('set too large', () => cache.set('huge', new Uint8Array(70 << 20), NEVER));
  call('set zero ttl', () => cache.set('zero', utf8.encode('x'), after(0n)));
  call('other set', () => other.set('where', utf8.encode('other'), NEVER));
  call('other get greeting', () => other.get('greeting'));
  call('other keys', () => other.keys('', undefined, 100));
} else if (phase === 'second') {
  call('get bytes', () => cache.get('bytes'));
  call('get greeting', () => cache.get('greeting'));
  call('get ttl', () => cache.get('ttl'));
  call('get big length', () => cache.get('big')?.length);
  call('get short', () => cache.get('short'));
  call('get added', () => cache.get('added'));
  call('incr n', () => cache.incr('n', 1n, 0n, NEVER));
  call('keys', () => cache.keys('', undefined, 100));
  call('other get where', () => other.get('where'));
  call('other keys', () => other.keys('', undefined, 100));
} else {
  call('get from-rust', () => cache.get('from-rust'));
  call('get raw-from-rust', () => cache.get('raw-from-rust'));
  call('get greeting', () => cache.get('greeting'));
  call('incr n', () => cache.incr('n', 1n, 0n, NEVER));
  call('keys', () => cache.keys('', undefined, 100));
  call('clear', () => cache.clear());
  call('keys after clear', () => cache.keys('', undefined, 100));
}
call('stats', () => cache.stats());
call('close', () => Cache.close(cache));
// `close` took the handle: using it again is an error of the JS binding, not of the guest.
call('get after close', () => cache.get('bytes'));
call('other close', () => Cache.close(other));
results.elapsedMs = Math.round(performance.now() - started);
results.phase = phase;
console.log(JSON.stringify(results));
