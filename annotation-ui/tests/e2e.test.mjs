// End-to-end test of the annotation UI: the real facesim server (built by cargo) on a loopback
// port with a temporary data dir and real demo faces, driven through Debian's headless Chromium by
// playwright-core. Checks in the server, through the API, that exactly the expected votes and
// labels exist. Screenshots of the main screens go to annotation-ui/screenshots/.
//
// Needs: target/debug/facesim-server and target/debug/facesim (cargo build; FACESIM_BIN_DIR
// points elsewhere), /usr/bin/chromium (CHROMIUM overrides), a built dist/ (npm run build).
// Run: node --test tests/

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const ui = resolve(here, "..");
const repo = resolve(ui, "..");
const bin = (name) => join(process.env.FACESIM_BIN_DIR ?? join(repo, "target", "debug"), name);
const shots = join(ui, "screenshots");
const ADMIN = "ui-test-admin-token-0123456789";
const MIN_ANSWER_MS = 1000;

let work, port, url, server, browser;

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });
}

/** Runs the facesim CLI against the test server; returns stdout. */
function cli(args, token = ADMIN) {
  return execFileSync(bin("facesim"), args, {
    env: { ...process.env, FACESIM_SERVER: url, FACESIM_TOKEN: token },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

function startServer() {
  server = spawn(
    bin("facesim-server"),
    ["--data-dir", join(work, "data"), "--addr", `127.0.0.1:${port}`, "--ui-dir", join(ui, "dist")],
    { env: { ...process.env, FACESIM_ADMIN_TOKEN: ADMIN }, stdio: ["ignore", "ignore", "pipe"] },
  );
  server.stderr.on("data", () => {});
}

async function waitForServer() {
  for (let i = 0; i < 300; i++) {
    try {
      const page = await fetch(`${url}/`);
      if (page.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the server did not start");
}

function stopServer(signal = "SIGTERM") {
  return new Promise((ok) => {
    if (!server || server.exitCode !== null) return ok();
    server.once("exit", ok);
    server.kill(signal);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Votes in the store, through the API. */
function votes() {
  return cli(["labels", "votes", "--format", "jsonl"]).trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

function labels() {
  return cli(["labels", "export", "--format", "jsonl"]).trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), "facesim-ui-"));
  rmSync(shots, { recursive: true, force: true });
  mkdirSync(shots, { recursive: true });
  // A small real gallery: two photos each of six people from the bundled demo faces.
  const demo = join(repo, "datasets", "lfw-demo");
  const people = readdirSync(demo, { withFileTypes: true })
    .filter((e) => e.isDirectory() && readdirSync(join(demo, e.name)).length >= 2)
    .map((e) => e.name)
    .sort()
    .slice(0, 6);
  for (const person of people) {
    mkdirSync(join(work, "faces", person), { recursive: true });
    for (const file of readdirSync(join(demo, person)).sort().slice(0, 2)) {
      cpSync(join(demo, person, file), join(work, "faces", person, file));
    }
  }
  port = await freePort();
  url = `http://127.0.0.1:${port}`;
  startServer();
  await waitForServer();
  cli(["dataset", "import", join(work, "faces"), "--dataset", "ui-test", "--wait"]);
  cli(["pairs", "propose", "--budget", "3", "--batch-size", "3"]);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await stopServer();
  if (work) rmSync(work, { recursive: true, force: true });
});

function annotatorToken(name) {
  const out = cli(["admin", "create-user", name, "--role", "annotator"]);
  return out.trim().split("\n").pop().trim();
}

async function signIn(page, token) {
  await page.getByLabel("Annotator token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Instructions" }).waitFor();
}

/** The pair shown now, once its faces are there. */
async function shownPair(page) {
  await page.locator("#labeling").waitFor();
  await page.waitForFunction(() => document.getElementById("face-b").complete && document.getElementById("face-b").naturalWidth > 0);
  return Number(await page.locator("#labeling").getAttribute("data-pair"));
}

/** Waits until a pair other than `previous` (or the done screen) shows. */
async function nextShown(page, previous) {
  await page.waitForFunction(
    (prev) => !document.getElementById("done").hidden || document.getElementById("labeling").dataset.pair !== String(prev),
    previous,
  );
  return (await page.locator("#done").isVisible()) ? null : shownPair(page);
}

test("annotators wait for instructions, sign in, read them, vote by click and keyboard, see the 1-second rule, finish the batch", async () => {
  const tokens = [annotatorToken("ann-ui-1"), annotatorToken("ann-ui-2"), annotatorToken("ann-ui-3")];
  // Before a researcher sets instructions no task is handed out, and the page says why.
  const early = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const earlyPage = await early.newPage();
  await earlyPage.goto(url);
  await signIn(earlyPage, annotatorToken("ann-ui-0"));
  await earlyPage.getByText(/^no labeling instructions set/).waitFor();
  await earlyPage.getByRole("button", { name: "Start labeling" }).click();
  await earlyPage.getByText(/^no labeling instructions set: .*; retrying…$/).waitFor();
  await early.close();
  cli([
    "labeling", "instructions", "set",
    "--text", "Similar if a stranger could mistake one person for the other.",
    "--similar", "1,3,alike: same face shape",
    "--dissimilar", "1,5,different features",
  ]);

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(url);

  // Sign-in screen; a wrong token is refused with a message.
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.screenshot({ path: join(shots, "sign-in.png") });
  await page.getByLabel("Annotator token").fill("not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("Unknown, expired or revoked token.").waitFor();

  // Instructions with the researcher's two example pairs.
  await signIn(page, tokens[0]);
  await page.getByText("Similar if a stranger could mistake one person for the other.").waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll(".example img")].every((i) => i.complete && i.naturalWidth > 0));
  assert.equal(await page.locator(".example img").count(), 4);
  await page.screenshot({ path: join(shots, "instructions.png") });

  // Labeling: for its first second a pair cannot be answered (the server's rule); the page says
  // how long is left, and a key pressed meanwhile changes nothing.
  await page.getByRole("button", { name: "Start labeling" }).click();
  const first = await shownPair(page);
  await page.getByText(/^You can answer in \d\.\d s$/).waitFor();
  assert.equal(await page.locator("#vote-similar").isDisabled(), true);
  await page.screenshot({ path: join(shots, "too-fast.png") });
  await page.keyboard.press("s");
  await page.waitForFunction(() => document.getElementById("vote-similar").disabled === false);
  assert.equal(await page.locator("#wait").textContent(), "");
  assert.equal(await shownPair(page), first, "an early key keeps the pair");
  assert.equal(votes().length, 0, "and sends no vote");
  await page.screenshot({ path: join(shots, "labeling.png") });

  // By click, then by keyboard.
  await page.getByRole("button", { name: /^Similar/ }).click();
  const second = await nextShown(page, first);
  assert.ok(second && second !== first);
  await page.getByText(/My votes today: 1 · Pairs left in this batch: \d+/).waitFor();
  // The instructions stay reachable; coming back shows the same pair.
  await page.getByRole("button", { name: "Instructions" }).click();
  await page.getByRole("heading", { name: "Instructions" }).waitFor();
  await page.getByRole("button", { name: "Start labeling" }).click();
  assert.equal(await shownPair(page), second);
  await sleep(MIN_ANSWER_MS + 100);
  await page.keyboard.press("d");
  const third = await nextShown(page, second);
  assert.ok(third && third !== first && third !== second);
  await sleep(MIN_ANSWER_MS + 100);
  await page.keyboard.press("d");
  assert.equal(await nextShown(page, third), null, "three pairs, three votes: nothing left for this annotator");
  await page.getByRole("heading", { name: "Nothing left to label" }).waitFor();
  await page.screenshot({ path: join(shots, "done.png") });
  const mine = votes().filter((v) => v.annotator_id === votes()[0].annotator_id);
  assert.deepEqual(mine.map((v) => [v.pair_id, v.choice]), [[first, "similar"], [second, "dissimilar"], [third, "dissimilar"]]);

  // Signing out forgets the token.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("facesim.token")), null);

  // Two more annotators on a phone-sized screen finish the batch by keyboard; the second of them
  // meets a server restart before its last vote (the page retries, then carries on).
  await context.close();
  for (const [i, token] of tokens.slice(1).entries()) {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    await p.goto(url);
    await signIn(p, token);
    await p.getByRole("button", { name: "Start labeling" }).click();
    let pair = await shownPair(p);
    if (i === 0) {
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the labeling screen fits a 390 px phone (overflow ${overflow} px)`);
      await p.screenshot({ path: join(shots, "labeling-phone.png") });
    }
    for (let n = 0; n < 3; n++) {
      await sleep(MIN_ANSWER_MS + 100);
      if (i === 1 && n === 2) {
        await stopServer("SIGKILL");
        await p.keyboard.press("d");
        await p.getByText("The server cannot be reached").waitFor();
        await p.screenshot({ path: join(shots, "unreachable.png") });
        startServer();
        await waitForServer();
        // The lease died with the server: the page gets a fresh task for the same pair.
        pair = await shownPair(p);
        await p.waitForFunction(() => document.getElementById("vote-similar").disabled === false);
        await sleep(MIN_ANSWER_MS + 100);
      }
      await p.keyboard.press("d");
      const next = await nextShown(p, pair);
      pair = next;
      if (n === 2) assert.equal(next, null);
    }
    await phone.close();
  }

  // In the server: 9 votes, 3 per pair from 3 different annotators, 3 labels by majority.
  const all = votes();
  assert.equal(all.length, 9, JSON.stringify(all));
  const byPair = new Map();
  for (const v of all) byPair.set(v.pair_id, [...(byPair.get(v.pair_id) ?? []), v]);
  assert.equal(byPair.size, 3);
  for (const [, vs] of byPair) assert.equal(new Set(vs.map((v) => v.annotator_id)).size, 3);
  assert.ok(all.every((v) => v.answer_seconds >= MIN_ANSWER_MS / 1000 && v.counted === true));
  const got = labels();
  assert.equal(got.length, 3);
  for (const label of got) {
    assert.equal(label.similar_votes + label.dissimilar_votes, 3);
    assert.equal(label.majority, "dissimilar", JSON.stringify(label));
  }
  assert.deepEqual(got.map((l) => l.split).sort(), ["2-1", "3-0", "3-0"]);
});
