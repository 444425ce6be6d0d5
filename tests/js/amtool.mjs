// JavaScript Automerge (the reference implementation) against circle's documents.
//
//   node amtool.mjs edit IN OUT OPS_JSON [ACTOR_HEX]
//                                          load IN, apply OPS as one change (written by
//                                          ACTOR_HEX if given, as a member's device would), save to OUT
//   node amtool.mjs read IN                 print the board as JSON (titles, names, meta)
//
// OPS is a list of {"path": [..keys], "value": V}, {"path": [...], "delete": true}
// or {"path": [...], "update_text": s} (splice a Text object into s, as an editor does).
// V is {"counter": n} | {"timestamp": ms} | {"text": s} (a Text object, what JS
// writes for a plain string) | {"str": s} (an immutable scalar string) |
// {"int": n} | {"float": x} | {"bool": b} | {"null": true} | {"list": [V...]} |
// {"map": {k: V}} | {"big": n} (an n-character string) | {"increment": n}
// (increment the counter at path).
import * as A from "@automerge/automerge";
import fs from "node:fs";

function make(v) {
  if ("counter" in v) return new A.Counter(v.counter);
  if ("timestamp" in v) return new Date(v.timestamp);
  if ("text" in v) return v.text;
  if ("str" in v) return new A.ImmutableString(v.str);
  if ("int" in v) return new A.Int(v.int);
  if ("float" in v) return new A.Float64(v.float);
  if ("bool" in v) return v.bool;
  if ("null" in v) return null;
  if ("list" in v) return [];
  if ("map" in v) return {};
  if ("big" in v) return new A.ImmutableString("x".repeat(v.big));
  throw new Error("unknown value " + JSON.stringify(v));
}

// Maps and lists are filled one entry at a time: a plain object holding
// `Int` instances, assigned at once, would store each of them as a map.
function assign(obj, key, v) {
  obj[key] = make(v);
  if ("map" in v) for (const [k, x] of Object.entries(v.map)) assign(obj[key], k, x);
  if ("list" in v) v.list.forEach((x, i) => assign(obj[key], i, x));
}

function plain(x) {
  if (x === null || x === undefined) return x ?? null;
  if (x instanceof A.ImmutableString) return x.toString();
  if (typeof x === "string" || typeof x === "number" || typeof x === "boolean") return x;
  if (x instanceof A.Counter) return { counter: x.value };
  if (x instanceof Date) return { timestamp: x.getTime() };
  if (x instanceof Uint8Array) return { bytes: x.length };
  if (Array.isArray(x)) return x.map(plain);
  return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
}

const [cmd, input, ...rest] = process.argv.slice(2);
const actor = cmd === "edit" ? rest[2] : undefined;
let doc = A.load(new Uint8Array(fs.readFileSync(input)), actor ? { actor } : undefined);
if (cmd === "edit") {
  const [output, opsJson] = rest;
  const ops = JSON.parse(opsJson);
  doc = A.change(doc, (d) => {
    for (const op of ops) {
      let obj = d;
      for (const key of op.path.slice(0, -1)) obj = obj[key];
      const last = op.path[op.path.length - 1];
      if (op.delete) delete obj[last];
      else if ("update_text" in op) A.updateText(d, op.path, op.update_text); // splices into the Text object
      else if (op.value && "increment" in op.value) obj[last].increment(op.value.increment);
      else assign(obj, last, op.value);
    }
  });
  fs.writeFileSync(output, A.save(doc));
} else if (cmd === "read") {
  const titles = (coll, field) =>
    Object.fromEntries(Object.entries(doc[coll] ?? {}).map(([id, r]) => [id, plain(r[field])]));
  console.log(JSON.stringify({
    meta: plain(doc.meta),
    needs: titles("needs", "title"),
    offers: titles("offers", "title"),
    tools: titles("tools", "name"),
    members: titles("members", "handle"),
    statements: Object.keys(doc.statements ?? {}).length,
  }));
} else {
  throw new Error("usage: amtool.mjs edit IN OUT OPS | read IN");
}
