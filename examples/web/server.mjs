// The demo's dev server: static files with the COOP/COEP headers that make the page cross-origin
// isolated (SharedArrayBuffer, so onnxruntime-web can use threads). No framework, no network.
//   node server.mjs --model ../../out/onnx [--port 8000] [--host 127.0.0.1] [--onebit DIR]
// Serves this folder at /, onnxruntime-web's dist/ at /ort/, onebit.wasm and onebit.mjs at /onebit/
// (DIR, default ../../runtime_c/build/wasm: make -C runtime_c wasm) and the exported model
// (model_web.onnx and/or model.1bit) at /model/.
import { createServer } from "node:http";
import { createReadStream, statSync } from "node:fs";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = parseArgs(process.argv.slice(2));
const roots = {
  "/ort/": join(here, "node_modules", "onnxruntime-web", "dist"),
  "/onebit/": resolve(args.onebit ?? join(here, "..", "..", "runtime_c", "build", "wasm")),
  "/model/": resolve(args.model ?? join(here, "model")),
  "/": here,
};
const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
  ".png": "image/png", ".css": "text/css", ".map": "application/json",
};
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(model|port|host|onebit)$/.exec(argv[i]);
    if (!m || i + 1 >= argv.length) {
      console.error(`error: unknown or incomplete argument ${argv[i]} (use --model DIR --port N --host ADDR --onebit DIR)`);
      process.exit(1);
    }
    out[m[1]] = argv[++i];
  }
  return out;
}

function resolvePath(urlPath) {
  for (const [prefix, root] of Object.entries(roots)) {
    if (!urlPath.startsWith(prefix)) continue;
    const rel = normalize(decodeURIComponent(urlPath.slice(prefix.length)) || "index.html");
    const file = join(root, rel);
    if (file !== root && !file.startsWith(root + sep)) return null; // no escaping the root
    if (prefix === "/" && rel.split(sep)[0] === "node_modules") return null;
    return file;
  }
  return null;
}

const exists = (file) => {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
};
if (!exists(join(roots["/model/"], "model_web.onnx")) && !exists(join(roots["/model/"], "model.1bit"))) {
  console.error(`error: neither model_web.onnx nor model.1bit in ${roots["/model/"]} (onebit-export CKPT --format onnx ` +
    `-o DIR and/or onebit-export CKPT -o DIR/model.1bit, then --model DIR)`);
  process.exit(1);
}

const server = createServer((req, res) => {
  const urlPath = new URL(req.url, "http://localhost").pathname;
  const file = resolvePath(urlPath);
  let size = -1;
  try {
    if (file) size = statSync(file).isFile() ? statSync(file).size : -1;
  } catch {
    size = -1;
  }
  if (size < 0 || (req.method !== "GET" && req.method !== "HEAD")) {
    res.writeHead(size < 0 ? 404 : 405, { "Content-Type": "text/plain", ...ISOLATION });
    res.end(size < 0 ? "not found\n" : "method not allowed\n");
    return;
  }
  res.writeHead(200, {
    "Content-Type": TYPES[extname(file)] ?? "application/octet-stream",
    "Content-Length": size,
    "Cache-Control": "no-cache",
    ...ISOLATION,
  });
  if (req.method === "HEAD") res.end();
  else createReadStream(file).pipe(res);
});

server.on("error", (e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
server.listen(Number(args.port ?? 8000), args.host ?? "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`serving http://${address}:${port}/ (model: ${roots["/model/"]})`);
});
