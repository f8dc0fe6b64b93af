// Writes a gzipped copy beside each text file of the build; the server sends it to clients that accept
// gzip (gpustack/server/ui.py), so nothing is compressed per request and streams stay uncompressed.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const root = process.argv[2];
if (!root) throw new Error("usage: node scripts/compress.mjs <build folder>");
const TEXT = /\.(js|mjs|css|html|svg|json|txt|map)$/;
let raw = 0;
let packed = 0;

function walk(folder) {
  for (const name of readdirSync(folder)) {
    const path = join(folder, name);
    if (statSync(path).isDirectory()) {
      walk(path);
    } else if (TEXT.test(name)) {
      const data = readFileSync(path);
      const gz = gzipSync(data, { level: 9 });
      raw += data.length;
      packed += gz.length;
      if (gz.length < data.length) writeFileSync(`${path}.gz`, gz);
    }
  }
}

walk(root);
console.log(`compress: ${(raw / 1024).toFixed(0)} KiB of text, ${(packed / 1024).toFixed(0)} KiB gzipped`);
