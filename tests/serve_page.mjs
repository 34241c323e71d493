// Drive the chat page of `onebit serve` in a real headless Chromium (playwright-core from
// examples/web/node_modules, no browser download): send each message, wait for the streamed
// answer, print {answers, speed, states} as JSON. Exit 1 on any console or page error.
//   node tests/serve_page.mjs URL OUT_DIR MESSAGE...        (tests/test_serve.py runs it)
import { createRequire } from "node:module";
import { join } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";

const require = createRequire(new URL("../examples/web/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const [url, out, ...messages] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "onebit-serve-chromium-"));
const problems = [];
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console error: ${msg.text()}`); });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").dataset.state !== "loading", null,
    { timeout: 60000 });
  const answers = [], states = [];
  let speed = "";
  for (const [i, text] of messages.entries()) {
    await page.locator("#input").fill(text);
    await page.keyboard.press("Enter");
    await page.waitForFunction((n) => document.querySelectorAll(".assistant[data-done]").length === n, i + 1,
      { timeout: 60000 });
    answers.push(await page.locator(".assistant").nth(i).textContent());
    states.push(await page.locator("#status").getAttribute("data-state"));
    speed = await page.locator("#speed").textContent();
  }
  await page.screenshot({ path: join(out, "chat_page.png") });
  console.log(JSON.stringify({ answers, states, speed, problems }));
} catch (e) {
  problems.push(String(e));
  console.log(JSON.stringify({ problems }));
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(problems.length ? 1 : 0);
