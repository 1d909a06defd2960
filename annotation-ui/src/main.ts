// The annotation app: sign in with an annotator token, read the instructions, label pairs.
// Everything goes through the gRPC API over gRPC-Web on the page's own origin.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AdminService } from "./gen/facesim/v1/admin_pb";
import { Role } from "./gen/facesim/v1/common_pb";
import { type ExamplePair, LabelingService, type Task, VoteChoice } from "./gen/facesim/v1/labeling_pb";

const TOKEN_KEY = "facesim.token";
const RETRY_MILLIS = 2000;

let token: string | null = sessionStorage.getItem(TOKEN_KEY);

const withToken: Interceptor = (next) => async (request) => {
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [withToken] });
const admin = createClient(AdminService, transport);
const labeling = createClient(LabelingService, transport);

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`missing element #${id}`);
  return found as T;
}

const sections = ["sign-in", "instructions", "labeling", "done"] as const;
type Screen = (typeof sections)[number];
let screen: Screen = "sign-in";

function show(next: Screen) {
  screen = next;
  for (const id of sections) element(id).hidden = id !== next;
  element("nav").hidden = next === "sign-in";
  const focus: Record<Screen, string> = {
    "sign-in": "token",
    instructions: "start",
    labeling: "vote-similar",
    done: "check-again",
  };
  element(focus[next]).focus();
}

function status(text: string) {
  element("status").textContent = text;
}

function message(text: string) {
  element("message").textContent = text;
}

/** A readable sentence for an RPC failure. */
function explain(error: unknown): string {
  const e = ConnectError.from(error);
  if (e.code === Code.Unavailable || e.code === Code.Unknown || e.code === Code.DeadlineExceeded) {
    return "The server cannot be reached.";
  }
  return e.rawMessage || e.message;
}

function unreachable(error: unknown): boolean {
  const code = ConnectError.from(error).code;
  return code === Code.Unavailable || code === Code.Unknown || code === Code.DeadlineExceeded;
}

function jpegUrl(bytes: Uint8Array): string {
  return URL.createObjectURL(new Blob([bytes as BlobPart], { type: "image/jpeg" }));
}

function setFace(img: HTMLImageElement, bytes: Uint8Array) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = jpegUrl(bytes);
}

// ---- sign in / out ----

async function signIn(candidate: string) {
  token = candidate.trim();
  status("Signing in…");
  try {
    const me = await admin.whoAmI({});
    if (me.user?.role !== Role.ANNOTATOR) {
      token = null;
      status("This token does not belong to an annotator; labeling needs an annotator's token.");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    element("who").textContent = me.user.name;
    status("");
    await showInstructions();
  } catch (error) {
    token = null;
    const e = ConnectError.from(error);
    status(e.code === Code.Unauthenticated ? "Unknown, expired or revoked token." : explain(error));
    show("sign-in");
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  current = null;
  prefetched = null;
  element<HTMLInputElement>("token").value = "";
  element("who").textContent = "";
  status("Signed out.");
  show("sign-in");
}

// ---- instructions ----

function renderExamples(into: HTMLElement, pairs: ExamplePair[]) {
  into.replaceChildren(
    ...pairs.map((pair) => {
      const figure = document.createElement("figure");
      figure.className = "example";
      const faces = document.createElement("div");
      faces.className = "pair";
      for (const [bytes, which] of [
        [pair.faceA, "first"],
        [pair.faceB, "second"],
      ] as const) {
        const img = document.createElement("img");
        img.src = jpegUrl(bytes);
        img.alt = `Example, ${which} face`;
        faces.append(img);
      }
      const caption = document.createElement("figcaption");
      caption.textContent = pair.explanation;
      figure.append(faces, caption);
      return figure;
    }),
  );
}

async function showInstructions() {
  try {
    const instructions = await labeling.getInstructions({});
    minAnswerMillis = instructions.minAnswerMillis;
    element("instructions-text").textContent = instructions.text;
    element("instructions-timing").textContent =
      `Look at both faces for at least ${(instructions.minAnswerMillis / 1000).toFixed(1)} s before you answer; ` +
      "keys: S = similar, D = dissimilar, K = skip.";
    renderExamples(element("similar-examples"), instructions.similarExamples);
    renderExamples(element("dissimilar-examples"), instructions.dissimilarExamples);
  } catch (error) {
    if (ConnectError.from(error).code === Code.Unauthenticated) return expired();
    element("instructions-text").textContent = explain(error);
  }
  show("instructions");
}

function expired() {
  signOut();
  status("Your token is no longer valid; sign in again.");
}

// ---- labeling ----

let current: Task | null = null;
let prefetched: Promise<Task | null> | null = null;
let busy = false;
let votesToday = 0n;
/** The server's minimum time on a pair (from the instructions). */
let minAnswerMillis = 1000;
/** When the pair on screen may be answered (performance.now() time). */
let answerableAt = 0;
let countdown: number | undefined;

function setVoteButtons(enabled: boolean) {
  for (const id of ["vote-similar", "vote-dissimilar"]) element<HTMLButtonElement>(id).disabled = !enabled;
}

/**
 * The server accepts a vote only after the annotator had the pair for its minimum time (counted
 * from showing it, which is after the previous answer): until then the answer buttons wait and
 * say how long is left. Skipping is always possible.
 */
function waitBeforeAnswering() {
  answerableAt = performance.now() + minAnswerMillis;
  window.clearTimeout(countdown);
  const tick = () => {
    const left = answerableAt - performance.now();
    if (left <= 0) {
      countdown = undefined;
      element("wait").textContent = "";
      if (!busy) setVoteButtons(true);
      return;
    }
    element("wait").textContent = `You can answer in ${(left / 1000).toFixed(1)} s`;
    setVoteButtons(false);
    countdown = window.setTimeout(tick, Math.min(100, left));
  };
  tick();
}

/** Why the last task request gave none (the server unreachable, or its reason). */
let noTaskBecause = "";

/** Asks for a task; null when none can be had right now (`noTaskBecause` says why). */
async function fetchTask(): Promise<Task | null> {
  try {
    return await labeling.nextTask({ batchId: 0n });
  } catch (error) {
    if (ConnectError.from(error).code === Code.Unauthenticated) expired();
    noTaskBecause = unreachable(error) ? "The server cannot be reached" : explain(error);
    return null;
  }
}

function setButtons(enabled: boolean) {
  for (const id of ["vote-similar", "vote-dissimilar", "skip"]) element<HTMLButtonElement>(id).disabled = !enabled;
}

function progressLine() {
  const left = current ? current.remainingInBatch : 0n;
  element("progress").textContent = `My votes today: ${votesToday} · Pairs left in this batch: ${left}`;
}

async function refreshStats() {
  try {
    votesToday = (await labeling.myStats({})).votesToday;
  } catch {
    // The progress line is a convenience; the vote itself was acknowledged.
  }
  progressLine();
}

/** Shows the next task (the prefetched one when there is one) and prefetches the one after. */
async function advance() {
  setButtons(false);
  let task = prefetched ? await prefetched : null;
  prefetched = null;
  while (!task) {
    task = await fetchTask();
    if (!task) {
      if (!token) return;
      // E.g. no instructions yet: the server's reason, asked again until it changes.
      status(`${noTaskBecause.replace(/[.\s]+$/, "")}; retrying…`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_MILLIS));
    }
  }
  status("");
  if (task.done) {
    current = null;
    show("done");
    return;
  }
  current = task;
  const section = element("labeling");
  section.dataset.pair = String(task.pairId);
  section.dataset.lease = String(task.leaseId);
  setFace(element<HTMLImageElement>("face-a"), task.faceA);
  setFace(element<HTMLImageElement>("face-b"), task.faceB);
  progressLine();
  if (screen !== "labeling") show("labeling");
  setButtons(true);
  waitBeforeAnswering();
  prefetched = fetchTask();
}

async function startLabeling() {
  message("");
  if (current) {
    // Back from the instructions: the pair shown before is still this annotator's.
    show("labeling");
    return;
  }
  show("labeling");
  await refreshStats();
  await advance();
}

async function vote(choice: VoteChoice) {
  const task = current;
  if (!task || busy || performance.now() < answerableAt) return;
  busy = true;
  setButtons(false);
  try {
    for (;;) {
      try {
        await labeling.submitVote({ leaseId: task.leaseId, choice });
        message("");
        status("");
        await refreshStats();
        await advance();
        return;
      } catch (error) {
        const e = ConnectError.from(error);
        if (unreachable(error)) {
          // Same lease again: the server counts a retried vote once.
          status("The server cannot be reached; your vote will be sent again…");
          await new Promise((resolve) => setTimeout(resolve, RETRY_MILLIS));
          continue;
        }
        if (e.code === Code.Unauthenticated) return expired();
        if (e.code === Code.FailedPrecondition && /too fast/i.test(e.rawMessage)) {
          message("Too fast: look at both faces for at least a second, then answer again.");
          setButtons(true);
          waitBeforeAnswering();
          return;
        }
        if ((e.code === Code.FailedPrecondition && /expired/i.test(e.rawMessage)) || e.code === Code.NotFound) {
          // The lease lapsed (or the server restarted and forgot it); the prefetched one too.
          message("Time ran out for that pair; here is another one.");
          prefetched = null;
          await advance();
          return;
        }
        message(explain(error));
        setButtons(true);
        return;
      }
    }
  } finally {
    busy = false;
  }
}

async function skip() {
  const task = current;
  if (!task || busy) return;
  busy = true;
  setButtons(false);
  try {
    await labeling.skip({ leaseId: task.leaseId });
    message("");
  } catch (error) {
    if (ConnectError.from(error).code === Code.Unauthenticated) return expired();
    if (ConnectError.from(error).code !== Code.NotFound) message(explain(error));
  } finally {
    busy = false;
  }
  await advance();
}

// ---- wiring ----

element<HTMLFormElement>("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  void signIn(element<HTMLInputElement>("token").value);
});
element("sign-out").addEventListener("click", signOut);
element("show-instructions").addEventListener("click", () => void showInstructions());
element("start").addEventListener("click", () => void startLabeling());
element("check-again").addEventListener("click", () => void startLabeling());
element("vote-similar").addEventListener("click", () => void vote(VoteChoice.SIMILAR));
element("vote-dissimilar").addEventListener("click", () => void vote(VoteChoice.DISSIMILAR));
element("skip").addEventListener("click", () => void skip());
document.addEventListener("keydown", (event) => {
  if (screen !== "labeling" || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const key = event.key.toLowerCase();
  if (key === "s") void vote(VoteChoice.SIMILAR);
  else if (key === "d") void vote(VoteChoice.DISSIMILAR);
  else if (key === "k") void skip();
  else return;
  event.preventDefault();
});

if (token) void signIn(token);
else show("sign-in");
