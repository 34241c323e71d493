// Drive the demo page in a real headless Chromium (Playwright, no browser download): open it on
// the first of --backends, type a prompt, wait for the generation; then switch the page's backend
// selector to each next backend and wait for its generation of the same prompt.  Prints
// {runs: [{backend, promptIds, ids, text, stats, ...}], speeds, problems} as JSON on stdout and
// saves a screenshot.  Exit 1 on any console error, page error or error status.
// tests/test_web.py runs it.
//   node browser_test.mjs --url http://127.0.0.1:8000/ --prompt "ROMEO:" --n 40 --out DIR
//                         [--backends onebit,ort] [--temperature 0 --top-k 0 --top-p 1
//                         --repeat-penalty 1 --repeat-window 64 --seed 0]
//                         [--chromium /usr/bin/chromium] [--timeout-ms 120000]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const SETTINGS = { n: "n", temperature: "temperature", "top-k": "topK", "top-p": "topP",
  "repeat-penalty": "repeatPenalty", "repeat-window": "repeatWindow", seed: "seed" };

const NAMES = { onebit: "onebit.wasm", ort: "onnxruntime-web" }; // selector value -> model.name
const opts = { chromium: "/usr/bin/chromium", "timeout-ms": "120000", temperature: "0", n: "40", backends: "onebit,ort" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
    console.error(`error: bad argument ${argv[i]}`);
    process.exit(2);
  }
  opts[argv[i].slice(2)] = argv[i + 1];
}
if (!opts.url || opts.prompt === undefined || !opts.out) {
  console.error("error: --url, --prompt and --out are required");
  process.exit(2);
}

const backends = opts.backends.split(",");
if (!backends.every((b) => b in NAMES)) {
  console.error(`error: --backends takes a comma-separated list of ${Object.keys(NAMES).join(", ")}`);
  process.exit(2);
}
const url = new URL(opts.url);
url.searchParams.set("autorun", "0");
url.searchParams.set("backend", backends[0]);
for (const [flag, id] of Object.entries(SETTINGS)) if (opts[flag] !== undefined) url.searchParams.set(id, opts[flag]);

const timeout = Number(opts["timeout-ms"]);
const profile = mkdtempSync(join(tmpdir(), "onebit-chromium-"));
const problems = [];
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium, headless: true, args: FLAGS, viewport: { width: 1000, height: 760 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));

  await page.goto(url.href);
  await page.waitForFunction(() => ["ready", "error"].includes(document.getElementById("status").dataset.state),
    null, { timeout });
  const finished = (name) => page.waitForFunction(
    ([text, backend]) => {
      const state = document.getElementById("status").dataset.state;
      const out = document.getElementById("output");
      return state === "error" || (state === "done" && out.dataset.prompt === text && out.dataset.backend === backend);
    },
    [opts.prompt, name], { timeout });
  const read = () => page.evaluate(() => {
    const out = document.getElementById("output");
    const split = (s) => (s ? s.split(",").map(Number) : []);
    return {
      backend: out.dataset.backend,
      status: document.getElementById("status").dataset.state,
      statusText: document.getElementById("status").textContent,
      promptIds: split(out.dataset.promptIds),
      ids: split(out.dataset.ids),
      text: out.textContent,
      stats: document.getElementById("stats").textContent,
      isolated: crossOriginIsolated,
      threads: window.onebitDemo?.threads ?? null,
    };
  });
  const runs = [];
  const prompt = page.locator("#prompt");
  await prompt.fill("");
  await prompt.pressSequentially(opts.prompt);  // real key presses: the page regenerates on input
  for (const [i, backend] of backends.entries()) {
    if (i > 0) await page.selectOption("#backend", backend);  // the page regenerates on the switch
    await finished(NAMES[backend]);
    const run = await read();
    runs.push(run);
    if (run.status !== "done") {
      problems.push(`page status (${backend}): ${run.statusText}`);
      break;
    }
  }
  const speeds = await page.evaluate(() => document.getElementById("speeds").textContent);
  await page.screenshot({ path: join(opts.out, "screenshot.png") });
  console.log(JSON.stringify({ runs, speeds, problems }));
} catch (e) {
  problems.push(`driver: ${e.message.split("\n")[0]}`);
  console.log(JSON.stringify({ problems }));
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(problems.length ? 1 : 0);
