// Transpiles a WebAssembly component into an ES module that runs under Node.js with
// @bytecodealliance/preview2-shim (jco-transpile is jco's transpiler without the CLI).
//
// usage: node transpile.mjs COMPONENT.wasm OUT_DIR [NAME]
// writes OUT_DIR/NAME.js (default NAME: pcache), NAME.core.wasm and .d.ts type declarations.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { transpile, writeFiles } from '@bytecodealliance/jco-transpile';

const [component, outDir, name = 'pcache'] = process.argv.slice(2);
if (!component || !outDir) {
  console.error('usage: node transpile.mjs COMPONENT.wasm OUT_DIR [NAME]');
  process.exit(2);
}
// jco-transpile 0.15 throws a WIT `result::err` payload as a bare object by default; the jco CLI
// wraps it in a ComponentError (an Error whose `.payload` is the payload). Ask for the CLI's
// behaviour, so errors carry a stack and code written for the CLI's output works unchanged.
// The component imports `pcache:cache/value-reader` (a host reading big values natively for the
// engine); this host declines every read, so the engine reads values itself through WASI.
const map = { 'pcache:cache/value-reader': './value-reader.js' };
const { files } = await transpile(component, { name, outDir, map, noComponentErrorWrapping: false });
await writeFiles(files);
await writeFile(
  join(outDir, 'value-reader.js'),
  "// pcache:cache/value-reader for jco: decline, the engine reads the value itself.\n" +
    "export function stage() { return 'declined'; }\n",
);
