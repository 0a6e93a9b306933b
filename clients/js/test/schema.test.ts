import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CLIENT_OPS, REQUIRED, SERVER_OPS } from "../src/frames.js";

// dist/test/schema.test.js → the repository's schemas/.
const schemas = fileURLToPath(new URL("../../../../schemas/", import.meta.url));
const asyncapi = readFileSync(`${schemas}asyncapi.yaml`, "utf8");

/** The component messages of asyncapi.yaml: name → required fields. */
function messages(direction: "client" | "server"): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const components = asyncapi.slice(asyncapi.indexOf("\ncomponents:"));
  const blocks = components.split(new RegExp(`\\n    (?=(?:client|server)_\\w+:\\n)`));
  for (const block of blocks) {
    const head = /^(client|server)_(\w+):\n/.exec(block);
    if (head?.[1] !== direction || head[2] === undefined) continue;
    const required: string[] = [];
    const list = /\n {8}required:\n((?: {10}- "[^"]+"\n?)+)/.exec(block);
    for (const line of list?.[1]?.split("\n") ?? []) {
      const field = /- "([^"]+)"/.exec(line)?.[1];
      if (field !== undefined) required.push(field);
    }
    found.set(head[2], required);
  }
  return found;
}

test("the SDK knows exactly the ops asyncapi.yaml lists, both ways", () => {
  assert.deepEqual([...messages("client").keys()].sort(), [...CLIENT_OPS].sort());
  assert.deepEqual([...messages("server").keys()].sort(), [...SERVER_OPS].sort());
});

test("what the SDK requires of a server frame the schema requires too", () => {
  const server = messages("server");
  const committed = JSON.parse(readFileSync(`${schemas}events/im.message.committed.json`, "utf8")) as {
    required: string[];
  };
  for (const [op, fields] of Object.entries(REQUIRED)) {
    // A pushed message is the committed event's data (its schema's allOf).
    const required = op === "message" ? committed.required : server.get(op);
    assert.ok(required, op);
    for (const [field] of fields) assert.ok(required.includes(field), `${op}.${field} is not required by the schema`);
  }
});
