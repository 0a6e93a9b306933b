/**
 * The browser chat in headless Chromium (Debian's, driven by
 * playwright-core; run by tests/pipeline/web.rs against the real system):
 * alice and bob sign in by name in two browser contexts and exchange
 * messages; bob's badge shows 1, then nothing once he opens the
 * conversation; each message is drawn once, also after the gateway
 * alice's page is on is SIGKILLed (the test does it when asked) and the
 * page has moved to the other one. Prints one JSON line per step;
 * exits non-zero on any failure.
 */

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import type { Page } from "playwright-core";

const app = process.env["IM_APP_URL"];
if (app === undefined) throw new Error("IM_APP_URL is not set (tests/pipeline/web.rs sets it)");
const say = (event: Record<string, unknown>) => console.log(JSON.stringify(event));

const browser = await chromium.launch({
  executablePath: process.env["IM_CHROMIUM"] ?? "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

try {
  async function signIn(user: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on("pageerror", (error) => say({ event: "page_error", user, message: String(error) }));
    await page.goto(app as string);
    await page.fill("#user", user);
    await page.click("#login-name button");
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "online", undefined, { timeout: 20_000 });
    say({ event: "signed_in", user });
    return page;
  }
  const bubbles = (page: Page, text: string) => page.locator("#messages li .text", { hasText: text });

  const alice = await signIn("alice");
  const bob = await signIn("bob");
  await alice.fill("#peer", "bob");
  await alice.click("#new-chat button");
  await alice.fill("#text", "hello bob");
  await alice.click("#composer button");
  await bubbles(alice, "hello bob").waitFor({ timeout: 20_000 });
  say({ event: "sent", user: "alice" });

  const row = bob.locator('[data-conversation="dm:alice:bob"]');
  await row.locator(".badge", { hasText: "1" }).waitFor({ timeout: 20_000 });
  say({ event: "badge", user: "bob", unread: 1 });
  await row.click();
  await bubbles(bob, "hello bob").waitFor({ timeout: 20_000 });
  await bob.waitForFunction(
    () => document.querySelector('[data-conversation="dm:alice:bob"] .badge')?.textContent === "",
    undefined,
    { timeout: 20_000 },
  );
  say({ event: "badge", user: "bob", unread: 0 });

  await bob.fill("#text", "hi alice");
  await bob.click("#composer button");
  await bubbles(alice, "hi alice").waitFor({ timeout: 20_000 });
  await bubbles(bob, "hi alice").waitFor({ timeout: 20_000 });
  // A reaction from alice reaches bob's view.
  await alice.locator("#messages li", { hasText: "hi alice" }).locator("button", { hasText: "👍" }).click();
  await bob.locator("#messages li", { hasText: "hi alice" }).locator(".reactions", { hasText: "👍 1" }).waitFor({ timeout: 20_000 });
  // The gateway alice's page is connected to dies; she sends on; the page
  // reconnects to the other gateway and every message arrives once.
  const lines = createInterface({ input: process.stdin });
  const told = new Promise<void>((resolve) => lines.once("line", () => resolve()));
  const gateway = await alice.evaluate(() => document.body.dataset["gateway"]);
  say({ event: "kill", gateway });
  await told;
  lines.close();
  await alice.waitForFunction(() => document.getElementById("status")?.textContent !== "online", undefined, { timeout: 20_000 });
  await alice.fill("#text", "after the kill");
  await alice.click("#composer button");
  await alice.waitForFunction(() => document.getElementById("status")?.textContent === "online", undefined, { timeout: 60_000 });
  const now = await alice.evaluate(() => document.body.dataset["gateway"]);
  say({ event: "reconnected", user: "alice", gateway: now });
  if (now === gateway) throw new Error(`alice's page is back on ${now}, the gateway that was killed`);
  await bubbles(bob, "after the kill").waitFor({ timeout: 60_000 });
  await bubbles(alice, "after the kill").waitFor({ timeout: 60_000 });
  await new Promise((r) => setTimeout(r, 500));
  const counts = {
    alice: { hello: await bubbles(alice, "hello bob").count(), hi: await bubbles(alice, "hi alice").count(), after: await bubbles(alice, "after the kill").count() },
    bob: { hello: await bubbles(bob, "hello bob").count(), hi: await bubbles(bob, "hi alice").count(), after: await bubbles(bob, "after the kill").count() },
  };
  if (Object.values(counts).some((c) => c.hello !== 1 || c.hi !== 1 || c.after !== 1)) {
    say({ event: "failed", message: `each message must be drawn once: ${JSON.stringify(counts)}` });
    process.exit(1);
  }
  const screenshot = process.env["IM_SCREENSHOT"];
  if (screenshot !== undefined && screenshot !== "") await bob.screenshot({ path: screenshot });
  say({ event: "done", ok: true, counts });
} catch (error) {
  // What each page showed, to tell a lost message from a slow one.
  const pages = await Promise.all(
    browser.contexts().map(async (context) => {
      const page = context.pages()[0];
      if (page === undefined) return null;
      return page.evaluate(() => ({
        me: document.getElementById("me")?.textContent,
        status: document.getElementById("status")?.textContent,
        gateway: document.body.dataset["gateway"],
        messages: [...document.querySelectorAll("#messages li .text")].map((e) => e.textContent),
      }));
    }),
  ).catch(() => []);
  say({ event: "failed", message: String(error), pages });
  process.exitCode = 1;
} finally {
  await browser.close();
}
