// Run bench.html (one engine, one thread) in headless Chromium and print its JSON line: the
// browser half of tools/bench_wasm.py.  The server (server.mjs) must serve the models at /model/.
//   node bench_browser.mjs --url http://127.0.0.1:8000/ --engine onebit|ort --file model.1bit
//                          [--steps 16] [--chromium /usr/bin/chromium] [--timeout-ms 600000]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const opts = { chromium: "/usr/bin/chromium", "timeout-ms": "600000", steps: "16" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
    console.error(`error: bad argument ${argv[i]}`);
    process.exit(2);
  }
  opts[argv[i].slice(2)] = argv[i + 1];
}
if (!opts.url || !opts.engine || !opts.file) {
  console.error("error: --url, --engine and --file are required");
  process.exit(2);
}
const url = new URL("bench.html", opts.url);
for (const k of ["engine", "file", "steps"]) url.searchParams.set(k, opts[k]);

const profile = mkdtempSync(join(tmpdir(), "onebit-chromium-"));
let context, code = 1;
try {
  context = await chromium.launchPersistentContext(profile, { executablePath: opts.chromium, headless: true, args: FLAGS });
  const page = context.pages()[0] ?? await context.newPage();
  page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
  await page.goto(url.href);
  const result = page.locator("#result");
  await page.waitForFunction(() => document.getElementById("result").dataset.state !== "running", null,
    { timeout: Number(opts["timeout-ms"]) });
  const text = await result.textContent();
  if (await result.getAttribute("data-state") === "done") {
    console.log(text);
    code = 0;
  } else {
    console.error(`error: ${text}`);
  }
} catch (e) {
  console.error(`error: ${e.message.split("\n")[0]}`);
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
